import pytest

from greencode.errors import GreencodeError
from greencode.exits.points import exit_points, lite_weights, validate_exit_points


@pytest.mark.parametrize("layers, expected", [
    (28, [4, 6, 8, 10, 12, 14, 18, 22, 26]),  # Llama 3.2 3B, paper: 9 exits
    (32, [4, 6, 8, 10, 12, 14, 16, 20, 24, 28]),  # OPT 2.7B, paper: 10 exits
    (30, [4, 6, 8, 10, 12, 14, 19, 23, 27]),  # SmolLM2-135M
])
def test_exit_points_follow_the_paper(layers, expected):
    assert exit_points(layers) == expected


@pytest.mark.parametrize("layers", [2, 5, 7, 8, 12, 13, 40, 80])
def test_exit_points_are_ascending_and_below_the_final_layer(layers):
    points = exit_points(layers)
    assert points == sorted(set(points))
    assert points and points[0] >= 1 and points[-1] < layers


@pytest.mark.parametrize("layers", [12, 28, 30, 32])
def test_geometric_weights_have_the_paper_budgets(layers):
    weights = lite_weights(layers)
    points = exit_points(layers)
    assert set(weights) == set(points) | {layers}
    assert sum(weights.values()) == pytest.approx(1.0)
    first = [weights[p] for p in points if p <= layers / 2]
    second = [weights[p] for p in points if p > layers / 2]
    assert sum(first) == pytest.approx(0.7)
    assert sum(second) == pytest.approx(0.2)
    assert weights[layers] == pytest.approx(0.1)
    for group in (first, second):
        assert all(a > b for a, b in zip(group, group[1:]))  # decays within the group
        assert all(b / a == pytest.approx(0.9) for a, b in zip(group, group[1:]))


def test_uniform_and_explicit_weights():
    uniform = lite_weights(30, "uniform")
    assert len(set(uniform.values())) == 1 and sum(uniform.values()) == pytest.approx(1.0)
    explicit = lite_weights(12, [1, 1, 1, 2])
    assert explicit == {4: 0.2, 6: 0.2, 10: 0.2, 12: 0.4}


def test_weights_that_do_not_match_the_exits_are_refused():
    with pytest.raises(GreencodeError, match="4 exits"):
        lite_weights(12, [1, 2])
    with pytest.raises(GreencodeError, match="unknown LITE weight scheme"):
        lite_weights(12, "cubic")


@pytest.mark.parametrize("points, message", [
    ([8, 4], "ascending"), ([4, 4], "ascending"), ([0, 4], "1..29"), ([4, 30], "1..29"), ([], "empty"),
])
def test_exit_point_overrides_are_validated(points, message):
    with pytest.raises(GreencodeError, match=message):
        validate_exit_points(points, 30)
