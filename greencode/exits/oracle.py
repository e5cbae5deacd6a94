"""The oracle: per token, the earliest exit point that would have given the full-depth token.

It is a reference, not a policy one can run cheaply: it needs the full-depth token to judge each exit.
The engine decodes it at full depth (so its text is full depth's by construction) and reports, for each
token, the first exit point whose (shortlist) top-1 equals that token as its exit layer. Its cost is
then *modelled* (greencode.decoding.engine.CostModel: as if it had stopped there, paying one exit-head pass), never
measured: its measured time is full depth plus a head at every exit point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def first_agreeing_exit(exit_top1: Sequence[int], final_token: int, exit_points: Sequence[int],
                        num_layers: int) -> int:
    """The first exit point whose top-1 equals `final_token` (the token full depth emits), else L.

    `exit_top1[i]` is the token decoding would emit at `exit_points[i]`.

    >>> first_agreeing_exit([5, 7, 7], 7, [4, 6, 8], 12)
    6
    >>> first_agreeing_exit([5, 5, 5], 7, [4, 6, 8], 12)
    12
    """
    for layer, top1 in zip(exit_points, exit_top1):
        if top1 == final_token:
            return layer
    return num_layers


@dataclass(frozen=True)
class Oracle:
    """The `oracle` reference row: decodes at full depth, reports the first agreeing exit point."""

    name: str = "oracle"
    needs_logits: bool = False

    def decide(self, layer, exit_index, hidden, logits):
        return False, None  # never leaves: the engine runs full depth and judges the exits afterwards

    def with_threshold(self, value):
        return self


def oracle_share(modelled_speedup: float | None, oracle_speedup: float | None) -> float | None:
    """The share of the oracle's modelled saving (1 - 1/speed-up: the cost left out) that a row gets.

    1.0 = as good as the oracle, 0 = no saving; above 1 only by exiting where the oracle would not (wrong
    tokens). None when either figure is missing or the oracle saves nothing. Regret is 1 minus this.
    """
    if not modelled_speedup or not oracle_speedup:
        return None
    oracle_saving = 1 - 1 / oracle_speedup
    if oracle_saving <= 0:
        return None
    return (1 - 1 / modelled_speedup) / oracle_saving
