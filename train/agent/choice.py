"""Which exit agent ships, by the held-out trade-off of each candidate.

For each threshold T an agent exits a held-out token at the first exit point where P(exit) >= T. That
gives two figures per T: token agreement (the exit's token equals full depth's, as decoding picks it)
and a modelled speed-up (from the engine's cost model, with the exit head's real size; labelled modelled).
An agent's trade-off is its best modelled speed-up at an agreement of at least MIN_AGREEMENT; the candidate
(supervised on trajectories, supervised on teacher-forced states, PPO) with the best one ships.
"""

from __future__ import annotations

import numpy as np

from train.agent.report import exit_positions
from train.agent.trajectories import TrajectoryCache

MIN_AGREEMENT = 0.95  # token agreement the trade-off is read at
SWEEP = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99)


def token_units(cost, layers: np.ndarray, agent_units: float = 0.0, decisions: np.ndarray | None = None) -> np.ndarray:
    """Modelled layer-units per token exiting at `layers` (greencode.decoding.engine.CostModel: an exit pays one
    exit-head pass, full depth the whole head), plus the agent's decisions."""
    units = np.asarray([cost.units(int(layer), 0 if layer == cost.num_layers else 1) for layer in layers])
    if decisions is not None:
        units = units + decisions * agent_units
    return units


def agent_decision_units(net_arch: list[int], obs_dim: int, layer_bytes: int) -> float:
    """One agent decision (its fp32 MLP's weights read) in layer-units (bytes of a decoder layer's weights)."""
    widths = [obs_dim, *net_arch, 2]
    return 4 * sum(a * b + b for a, b in zip(widths, widths[1:])) / layer_bytes


def curve(probs: np.ndarray, held_out: TrajectoryCache, cost, agent_units: float,
          thresholds=SWEEP) -> dict[str, dict]:
    """{T: {agreement, mean_exit_layer, modelled_speedup}} on held-out tokens."""
    full = cost.full_units
    out = {}
    tokens = np.arange(held_out.num_tokens)
    for t in thresholds:
        positions = exit_positions(probs >= t)
        exited = positions < held_out.num_exits
        agrees = np.where(exited, held_out.correct[tokens, np.minimum(positions, held_out.num_exits - 1)], True)
        layers = held_out.layer_of(positions)
        decisions = np.minimum(positions + 1, held_out.num_exits)
        units = token_units(cost, layers, agent_units, decisions)
        out[f"{t:g}"] = {"agreement": round(float(agrees.mean()), 4), "early_exit_rate": round(float(exited.mean()), 4),
                         "mean_exit_layer": round(float(layers.mean()), 2),
                         "modelled_speedup": round(float(full / units.mean()), 3)}
    return out


def oracle_figures(held_out: TrajectoryCache, cost) -> dict:
    """The oracle (first exit that agrees): its mean exit layer and modelled speed-up on the same tokens."""
    layers = held_out.layer_of(held_out.optimal_positions)
    units = token_units(cost, layers)
    return {"mean_exit_layer": round(float(layers.mean()), 2),
            "modelled_speedup": round(float(cost.full_units / units.mean()), 3)}


def trade_off(figures: dict[str, dict], min_agreement: float = MIN_AGREEMENT) -> tuple[float, str | None]:
    """(best modelled speed-up with agreement >= min_agreement, its threshold); (1.0, None) when none does."""
    ok = [(f["modelled_speedup"], t) for t, f in figures.items() if f["agreement"] >= min_agreement]
    return max(ok) if ok else (1.0, None)


def choose(curves: dict[str, dict[str, dict]]) -> tuple[str, str]:
    """(the agent with the best trade-off, why) over {name: curve}; on a tie the first named wins."""
    figures = {name: trade_off(curve) for name, curve in curves.items()}
    best = max(figures, key=lambda name: figures[name][0])  # max keeps the first of equals
    line = ", ".join(f"{name} {speed:.3f}x (T={t})" for name, (speed, t) in figures.items())
    verdict = "the only candidate" if len(figures) == 1 else f"{best} is best"
    return best, f"at held-out token agreement >= {MIN_AGREEMENT:.0%}: {line}, modelled; {verdict}"
