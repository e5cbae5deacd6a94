"""Where a token may leave the model, and how much each exit counts in the LITE loss (paper III-D).

Layers are numbered 1..L (decoder blocks). L, the final layer, is always an exit but is not an
"exit point": exit points are the intermediate layers the policy is asked about.
"""

from __future__ import annotations

from collections.abc import Sequence

from greencode.errors import GreencodeError

FIRST_EXIT = 4  # the paper's first exit point
FIRST_HALF_BUDGET, SECOND_HALF_BUDGET, FINAL_BUDGET = 0.7, 0.2, 0.1
GEOMETRIC_RATIO = 0.9
WEIGHT_SCHEMES = ("geometric", "uniform")


def exit_points(num_layers: int) -> list[int]:
    """Layer 4, then every 2nd layer up to L/2, then every 4th layer after L/2, below L.

    >>> exit_points(30)
    [4, 6, 8, 10, 12, 14, 19, 23, 27]
    """
    half = num_layers // 2
    points = [*range(FIRST_EXIT, half + 1, 2), *range(half + 4, num_layers, 4)]
    # Models too shallow for the rule (under 8 layers) may exit after any layer below L.
    return points or list(range(1, num_layers))


def validate_exit_points(points: Sequence[int], num_layers: int) -> list[int]:
    """Check user-given exit points: ascending, unique, inside 1..L-1."""
    points = list(points)
    if not points:
        raise GreencodeError("exits.points is empty; give at least one layer in 1..L-1")
    if any(not isinstance(p, int) for p in points):
        raise GreencodeError(f"exits.points must be whole layer numbers, got {points}")
    if points != sorted(set(points)):
        raise GreencodeError(f"exits.points must be strictly ascending, got {points}")
    if points[0] < 1 or points[-1] > num_layers - 1:
        raise GreencodeError(
            f"exits.points must lie in 1..{num_layers - 1} for a {num_layers}-layer model, got {points}"
        )
    return points


def resolve_exit_points(config, num_layers: int, info: dict | None = None) -> list[int]:
    """[exits].points if set, else those a fine-tuned model was trained with, else the paper's rule."""
    if config.exits.points:
        return validate_exit_points(config.exits.points, num_layers)
    if info and info.get("exit_points"):
        return validate_exit_points(info["exit_points"], num_layers)
    return exit_points(num_layers)


def _geometric(n: int, budget: float) -> list[float]:
    raw = [GEOMETRIC_RATIO**i for i in range(n)]  # largest at the earliest exit
    total = sum(raw)
    return [budget * w / total for w in raw]


def lite_weights(
    num_layers: int,
    scheme: str | Sequence[float] = "geometric",
    points: Sequence[int] | None = None,
) -> dict[int, float]:
    """Loss weight per exit layer (every exit point and the final layer L); the weights sum to 1.

    geometric: first-half exits share 0.7, second-half exits 0.2, the final layer 0.1; inside a group
    the weights form a geometric sequence (ratio 0.9), largest at the earliest exit.
    uniform: the same weight everywhere. A list: one weight per exit point plus one for L, normalised.
    """
    points = list(points) if points is not None else exit_points(num_layers)
    layers = points + [num_layers]
    if isinstance(scheme, str):
        if scheme == "uniform":
            return {layer: 1.0 / len(layers) for layer in layers}
        if scheme != "geometric":
            raise GreencodeError(
                f"unknown LITE weight scheme {scheme!r}; allowed: {', '.join(WEIGHT_SCHEMES)} or a list"
            )
        first = [p for p in points if p <= num_layers / 2]
        second = [p for p in points if p > num_layers / 2]
        budgets = {"first": FIRST_HALF_BUDGET, "second": SECOND_HALF_BUDGET}
        # An empty group hands its budget to the other so the weights still sum to 1.
        if not second:
            budgets["first"] += budgets.pop("second")
        if not first:
            budgets["second"] = budgets.get("second", 0.0) + budgets.pop("first")
        weights = [*_geometric(len(first), budgets.get("first", 0.0)),
                   *_geometric(len(second), budgets.get("second", 0.0)), FINAL_BUDGET]
        return dict(zip(layers, weights))
    explicit = [float(w) for w in scheme]
    if len(explicit) != len(layers):
        raise GreencodeError(
            f"finetune.weights has {len(explicit)} values but there are {len(layers)} exits "
            f"({len(points)} exit points + the final layer): {layers}"
        )
    if any(w < 0 for w in explicit) or sum(explicit) <= 0:
        raise GreencodeError(f"finetune.weights must be non-negative with a positive sum, got {explicit}")
    total = sum(explicit)
    return {layer: w / total for layer, w in zip(layers, explicit)}
