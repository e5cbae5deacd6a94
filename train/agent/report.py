"""What a trained exit agent does on held-out trajectories: agent.json and the two plots.

The agent is read back from its exported file through greencode.exits.agent.ExitAgent, the same code the
`agent:T` policy runs, so the report describes the file that ships, not the SB3 object.

Decisions: at exit point e the optimal action is exit iff e >= l_opt (before l_opt the token would be
wrong; after it every step costs). A token's exit is optimal when it lands exactly on l_opt.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from greencode.files.atomic import atomic_write_text
from train.agent.env import position_feature_value
from train.agent.trajectories import TrajectoryCache

THRESHOLDS = (0.6, 0.8, 0.9, 0.92)
MOVING_AVERAGE = 50  # episodes, as the paper's Fig. 6


def exit_probabilities(agent, cache: TrajectoryCache) -> np.ndarray:
    """(N, E) P(exit) at every exit point of every token."""
    import torch

    obs = torch.from_numpy(np.ascontiguousarray(cache.observations))
    if agent.position_feature:
        column = torch.tensor([position_feature_value(e, cache.num_exits) for e in range(cache.num_exits)])
        obs = torch.cat([obs, column.expand(cache.num_tokens, -1).unsqueeze(-1)], dim=-1)
    return agent.prob_exit(obs).numpy()


def exit_positions(exit_now: np.ndarray) -> np.ndarray:
    """(N, E) bool decisions -> (N,) the first exit point taken, E (the final layer) when none."""
    return np.where(exit_now.any(axis=1), exit_now.argmax(axis=1), exit_now.shape[1])


def policy_figures(exit_now: np.ndarray, cache: TrajectoryCache) -> dict:
    num_exits, tokens = cache.num_exits, np.arange(cache.num_tokens)
    positions, optimal = exit_positions(exit_now), cache.optimal_positions
    agrees = np.where(positions < num_exits, cache.correct[tokens, np.minimum(positions, num_exits - 1)], True)
    grid = np.arange(num_exits)[None, :]
    visited = grid <= positions[:, None]  # decisions actually taken (all of them when the token went to L)
    right = exit_now == (grid >= optimal[:, None])
    layers = cache.layer_of(positions)
    return {
        "optimal_exit_rate": float(np.mean(positions == optimal)),
        "optimal_decision_rate": float(right[visited].mean()),
        "early_exit_rate": float(np.mean(positions < num_exits)),
        "token_agreement": float(np.mean(agrees)),  # exit top-1 == final top-1
        "mean_exit_layer": float(layers.mean()),
        "layers_skipped_frac": float(1 - layers.mean() / cache.num_layers),
    }


def mean_step_rewards(episodes: list[tuple[int, float]]) -> np.ndarray:
    return np.asarray([reward / max(steps, 1) for steps, reward in episodes], dtype=np.float64)


def layer_counts(cache: TrajectoryCache, positions: np.ndarray) -> dict[str, int]:
    layers = cache.layer_of(positions)
    return {str(layer): int(np.sum(layers == layer)) for layer in [*cache.exit_points, cache.num_layers]}


def build_report(agent_path: Path, cache: TrajectoryCache, held_out: TrajectoryCache,
                 episodes: list[tuple[int, float]], agent_config, timesteps: int, seconds: float,
                 held_out_samples: int, log_formats: list[str]) -> dict:
    from greencode.exits.agent import ExitAgent


    agent = ExitAgent.load(agent_path, cache.obs_dim, list(cache.exit_points))
    probs = exit_probabilities(agent, held_out)
    argmax = policy_figures(probs > 0.5, held_out)  # argmax of two logits: exit iff P(exit) > 1/2
    per_episode = mean_step_rewards(episodes)
    tail = per_episode[-max(1, len(per_episode) // 10):] if len(per_episode) else np.zeros(1)
    never_exit = np.zeros_like(probs, dtype=bool)
    return {
        "model": cache.model_name,
        "exit_points": list(cache.exit_points),
        "num_layers": cache.num_layers,
        "agent": str(agent_path),
        "timesteps": timesteps,
        "seconds": round(seconds, 2),
        "steps_per_s": round(timesteps / seconds, 1) if seconds > 0 else None,
        "episodes": len(episodes),
        "mean_step_reward": float(tail.mean()),  # last 10% of training episodes
        "mean_step_reward_first_episodes": float(per_episode[:max(1, len(per_episode) // 10)].mean())
        if len(per_episode) else 0.0,
        **argmax,
        "held_out": {"samples": held_out_samples, "tokens": held_out.num_tokens},
        "full_depth_baseline": policy_figures(never_exit, held_out),
        "exit_histogram": {"optimal": layer_counts(cache, cache.optimal_positions),
                           "agent_held_out": layer_counts(held_out, exit_positions(probs > 0.5))},
        "exit_rate_by_threshold": {f"{t:g}": policy_figures(probs >= t, held_out) for t in THRESHOLDS},
        "trajectories": {"samples": len(cache.sample_bounds()), "tokens": cache.num_tokens},
        "config": {key: value for key, value in dataclasses.asdict(agent_config).items()
                   if key not in ("path", "threshold")},
        "logs": log_formats,
    }


def write_report(report: dict, output: Path, cache: TrajectoryCache, held_out: TrajectoryCache,
                 episodes: list[tuple[int, float]], agent_path: Path) -> None:
    plot_reward_curve(episodes, output / "reward_curve.png", report["model"])
    plot_exit_histogram(report["exit_histogram"], output / "exit_histogram.png", report["model"])
    atomic_write_text(output / "agent.json", json.dumps(report, indent=2))


def plot_reward_curve(episodes: list[tuple[int, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    values = mean_step_rewards(episodes)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(values, color="#9bc4e2", linewidth=0.6, label="per episode")
    if len(values) >= MOVING_AVERAGE:
        smooth = np.convolve(values, np.ones(MOVING_AVERAGE) / MOVING_AVERAGE, mode="valid")
        ax.plot(np.arange(MOVING_AVERAGE - 1, len(values)), smooth, color="#1f4e79", linewidth=1.8,
                label=f"moving average ({MOVING_AVERAGE} episodes)")
    ax.set(xlabel="episode", ylabel="mean step reward", title=f"PPO exit agent: {title}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_exit_histogram(histogram: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(histogram["optimal"])
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(layers))
    for offset, (key, label, color) in zip((-0.2, 0.2), (("optimal", "optimal exit (all trajectories)", "#7fbf7b"),
                                                        ("agent_held_out", "agent exit (held-out, argmax)", "#1f4e79"))):
        counts = np.array([histogram[key][layer] for layer in layers], dtype=float)
        ax.bar(x + offset, counts / max(counts.sum(), 1), width=0.4, label=label, color=color)
    ax.set_xticks(x, [f"{layer}" + (" (L)" if i == len(layers) - 1 else "") for i, layer in enumerate(layers)])
    ax.set(xlabel="exit layer", ylabel="share of tokens", title=f"Exit occurrences: {title}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
