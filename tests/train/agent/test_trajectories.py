"""The trajectory cache: built through the engine on a tiny model, stored, reloaded, and checked."""

import json

import numpy as np
import pytest
import torch

from greencode.exits.agent import agent_observation
from greencode.config import load_config, replace
from greencode.data import CodeFile
from greencode.errors import GreencodeError
from train.agent.trajectories import (MANIFEST, TrajectoryCache, build_cache, check_compatible, context_range,
                                ensure_cache, load_cache, save_cache, synthetic_cache)

FILES = [CodeFile(f"f{i}.py", "".join(f"def f{i}_{k}(x):\n    return x * {k} + {i}\n\n" for k in range(12)), "python")
         for i in range(3)]


@pytest.fixture(scope="module")
def tiny_cache():
    from tests.conftest import _load

    loaded = _load("tiny-random-llama")
    return loaded, build_cache(loaded, [4, 6, 10], FILES, samples=4, tokens_per_sample=5, seed=3)


def test_the_cache_holds_what_the_model_computes_at_each_exit_point(tiny_cache):
    loaded, cache = tiny_cache
    assert cache.observations.shape == (cache.num_tokens, 3, 64) and cache.observations.dtype == np.float32
    assert len(cache.sample_bounds()) == 4 and cache.num_tokens == 4 * 5  # no EOS in 5 random tokens here
    source = cache.manifest["sample_sources"][1]
    file = next(f for f in FILES if f.path == source["file"])
    ids = loaded.tokenizer(file.text, add_special_tokens=False)["input_ids"]
    start, stop = source["context"]
    begin, end = cache.sample_bounds()[1]
    generated = cache.final_top1[begin:end].tolist()  # greedy: the final layer's top-1 is the token emitted
    with torch.no_grad():
        out = loaded.model(torch.tensor([ids[start:stop] + generated]), output_hidden_states=True)
    for t in range(end - begin):
        position = stop - start - 1 + t  # the input position whose output is token t
        for e, layer in enumerate(cache.exit_points):
            hidden = out.hidden_states[layer][:, position:position + 1]
            expected = agent_observation(loaded.adapter, hidden).numpy()
            np.testing.assert_allclose(cache.observations[begin + t, e], expected, rtol=1e-4, atol=1e-4)
            assert cache.exit_top1[begin + t, e] == int(loaded.adapter.logits(hidden)[0, -1].argmax())
        assert cache.final_top1[begin + t] == int(out.logits[0, position].argmax())


def test_contexts_are_a_uniform_fraction_of_the_file_and_at_most_512_tokens():
    rng = np.random.default_rng(0)
    cuts = [context_range(1000, rng) for _ in range(500)]
    assert all(0 <= start < stop and stop - start <= 512 for start, stop in cuts)
    stops = np.array([stop for _, stop in cuts])
    assert 200 <= stops.min() < 230 and 570 < stops.max() <= 600
    assert context_range(3000, np.random.default_rng(1))[1] - context_range(3000, np.random.default_rng(1))[0] == 512


def test_save_and_load_round_trip_with_a_manifest_naming_model_exits_and_observation(tmp_path, tiny_cache):
    _, cache = tiny_cache
    save_cache(cache, tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["model"] == "tiny-random-llama" and manifest["exit_points"] == [4, 6, 10]
    assert manifest["observation"]["dim"] == 64 and "final norm" in manifest["observation"]["form"]
    again = load_cache(tmp_path)
    for name in ("observations", "exit_top1", "final_top1", "sample"):
        np.testing.assert_array_equal(getattr(again, name), getattr(cache, name))
    assert again.exit_points == cache.exit_points and again.num_layers == 12


def test_l_opt_is_the_first_agreeing_exit_point_else_the_final_layer():
    cache = TrajectoryCache(np.zeros((3, 3, 2), np.float32), np.array([[5, 7, 7], [1, 2, 3], [7, 1, 7]]),
                            np.array([7, 9, 7]), np.zeros(3, np.int64), (2, 4, 6), 8)
    assert cache.optimal_positions.tolist() == [1, 3, 0]
    assert cache.layer_of(cache.optimal_positions).tolist() == [4, 8, 2]


def test_the_split_holds_whole_samples_out():
    cache = synthetic_cache(samples=20, tokens_per_sample=3)
    train, held = cache.split(0.2, seed=0)
    assert len(np.unique(held.sample)) == 4 and train.num_tokens + held.num_tokens == cache.num_tokens
    assert not set(train.sample.tolist()) & set(held.sample.tolist())


@pytest.mark.parametrize("kwargs, message", [
    ({"model_name": "default"}, "built for model 'synthetic', not 'default'"),
    ({"exit_points": [4, 8]}, "has exit points \\[4, 6, 10\\], the model uses \\[4, 8\\]"),
    ({"obs_dim": 576}, "64-wide observations, the model's are 576"),
])
def test_a_cache_for_another_model_or_exit_layout_is_one_clear_error(kwargs, message):
    with pytest.raises(GreencodeError, match=message):
        check_compatible(synthetic_cache(samples=2), "runs/trajectories", **kwargs)


def test_an_empty_or_missing_cache_is_one_clear_error(tmp_path):
    with pytest.raises(GreencodeError, match="no trajectory cache here"):
        load_cache(tmp_path / "nothing")
    save_cache(synthetic_cache(samples=0), tmp_path)
    with pytest.raises(GreencodeError, match="cache is empty"):
        check_compatible(load_cache(tmp_path), str(tmp_path))


def test_ensure_cache_refuses_a_cache_for_another_model_instead_of_replacing_it(tmp_path, tiny_llama):
    save_cache(synthetic_cache(samples=2), tmp_path)
    config = replace(load_config(overrides={}), agent={"trajectories": str(tmp_path)})
    with pytest.raises(GreencodeError, match="built for model 'synthetic'"):
        ensure_cache(config, tiny_llama, [4, 6, 10])
    assert load_cache(tmp_path).model_name == "synthetic"  # untouched
