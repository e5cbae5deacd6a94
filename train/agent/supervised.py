"""A supervised exit agent: the same MLP and file format as the PPO agent, trained to predict whether
the token is already right at an exit point (its top-1 there equals the final layer's top-1).

Why it exists: with the paper's rewards (eq. 2/3) and a model whose early exits agree with the final layer
on a minority of tokens, PPO settles on "always continue" (see docs/results.md). Predicting correctness directly
gives P(exit) the meaning the threshold knob wants: agent:0.9 exits where the agent is 90% sure the token
is already what full depth would give.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from greencode.exits.agent import build_mlp, save_agent
from train.agent.trajectories import TrajectoryCache

ACTIVATION = "tanh"


@torch.no_grad()
def fold_standardisation(net: torch.nn.Sequential, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Fold the input standardisation (x - mean) / std into the first layer: the saved file stays a plain MLP."""
    first = net[0]
    first.bias -= (first.weight * (mean / std)).sum(1)
    first.weight /= std


def _features(cache: TrajectoryCache, position_feature: bool) -> torch.Tensor:
    """(N * E, D) observations of every token at every exit point, as agent_observation builds them."""
    from train.agent.env import position_feature_value

    obs = torch.from_numpy(np.ascontiguousarray(cache.observations))  # (N, E, D)
    if position_feature:
        column = torch.tensor([position_feature_value(e, cache.num_exits) for e in range(cache.num_exits)])
        obs = torch.cat([obs, column.expand(cache.num_tokens, -1).unsqueeze(-1)], dim=-1)
    return obs.reshape(-1, obs.shape[-1])


def train_supervised_agent(cache: TrajectoryCache, agent_config, output: str | Path, epochs: int = 30,
                           lr: float = 1e-3, held_out_fraction: float = 0.1, log=None) -> dict:
    """Fit, export to OUTPUT/agent.safetensors, and report the held-out figures per threshold."""
    from greencode.exits.agent import ExitAgent
    from train.agent.report import THRESHOLDS, exit_probabilities, policy_figures

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    train_part, held_out = cache.split(held_out_fraction, agent_config.seed)
    x = _features(train_part, agent_config.position_feature)
    y = torch.from_numpy(train_part.correct.reshape(-1).astype(np.int64))  # 1 = exiting here is right
    mean, std = x.mean(0), x.std(0) + 1e-4
    torch.manual_seed(agent_config.seed)
    net = build_mlp(x.shape[1], list(agent_config.net_arch), ACTIVATION)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(agent_config.seed)
    started = time.perf_counter()
    for epoch in range(epochs):
        for rows in torch.randperm(len(x), generator=generator).split(256):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(net((x[rows] - mean) / std), y[rows])
            loss.backward()
            optimiser.step()
        if log is not None:
            from train.assets.calibration import progress_line

            log(progress_line(f"supervised agent, loss {loss.item():.3f}", epoch + 1, epochs, started, "epochs"))
    fold_standardisation(net, mean, std)
    seconds = time.perf_counter() - started
    path = save_agent(output / "agent.safetensors", net.state_dict(), list(agent_config.net_arch), ACTIVATION,
                      cache.obs_dim, list(cache.exit_points), cache.model_name, agent_config.position_feature)
    agent = ExitAgent.load(path, cache.obs_dim, list(cache.exit_points))
    probs = exit_probabilities(agent, held_out)
    never = np.zeros_like(probs, dtype=bool)
    return {
        "method": "supervised: cross-entropy on 'the exit's top-1 equals the final layer's' per exit point",
        "epochs": epochs, "seconds": round(seconds, 1), "train_tokens": train_part.num_tokens,
        "held_out_tokens": held_out.num_tokens,
        "positive_rate": round(float(y.float().mean()), 4),
        "full_depth_baseline": policy_figures(never, held_out),
        "exit_rate_by_threshold": {f"{t:g}": policy_figures(probs >= t, held_out) for t in (0.5, *THRESHOLDS)},
    }
