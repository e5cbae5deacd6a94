"""The supervised exit agent at scale: taught on teacher-forced calibration states instead of generated tokens.

One prefill of a 512-token window gives every position's state at every exit point
(train/assets/calibration.py), so a million labelled tokens cost minutes, where generating them costs hours.
The label of (token, exit point) is what decoding would do there: the exit's top-1 through the exit maps and
the shortlist head equals the final layer's top-1. The observation is agent_observation's, the final norm of
the raw state at the exit, computed batch by batch from the float16 states, so no (tokens x exits x width)
float32 copy is ever made.

The generated trajectories (the model's own continuations, train/agent/batched_trajectories.py) stay a held-out
set: they show the shift between real code, which teacher forcing reads, and what decoding feeds the model.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from train.agent.trajectories import TrajectoryCache
from train.assets.calibration import CalibrationStates, progress_line

TOKENS_PER_BATCH = 64  # tokens per step; each gives one example per exit point


def observations(adapter, states: CalibrationStates, rows: torch.Tensor, position_feature: bool) -> torch.Tensor:
    """(len(rows) * E, D) agent observations of `rows` at every exit point, token-major, as agent_observation
    builds them (final norm of the raw state, float32; the exit's index appended when asked)."""
    points = sorted(states.exits)
    with torch.no_grad():
        obs = torch.stack([adapter.final_norm(states.exits[p][rows].float()) for p in points], dim=1)  # (B, E, d)
    if position_feature:
        from train.agent.env import position_feature_value

        column = torch.tensor([position_feature_value(e, len(points)) for e in range(len(points))])
        obs = torch.cat([obs, column.expand(len(rows), -1).unsqueeze(-1)], dim=-1)
    return obs.reshape(-1, obs.shape[-1])


def as_trajectory_cache(adapter, states: CalibrationStates, exit_tokens: torch.Tensor, num_layers: int,
                        model_name: str, seq_len: int) -> TrajectoryCache:
    """Held-out teacher-forced states as a TrajectoryCache (each window one sample), so the agent figures of
    train/agent/choice.py read them as they read trajectories. Meant for the validation split (float32 copy)."""
    obs = observations(adapter, states, torch.arange(states.count), False).reshape(states.count, len(states.exits), -1)
    return TrajectoryCache(obs.numpy(), exit_tokens.numpy(), states.final_top1.numpy(),
                           np.arange(states.count) // seq_len, tuple(sorted(states.exits)), num_layers, model_name)


def train_teacher_forced_agent(adapter, states: CalibrationStates, exit_tokens: torch.Tensor, agent_config,
                               model_name: str, output, epochs: float, lr: float, log=None) -> tuple:
    """Fit the agent's MLP by cross-entropy on 'exiting here is right' over every (token, exit point) of
    `states`; export it to OUTPUT/agent.safetensors. Returns (path, report)."""
    from pathlib import Path

    from greencode.exits.agent import build_mlp, save_agent
    from train.agent.supervised import ACTIVATION, fold_standardisation

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    correct = exit_tokens == states.final_top1[:, None]  # (N, E)
    generator = torch.Generator().manual_seed(agent_config.seed)
    probe = observations(adapter, states, torch.randperm(states.count, generator=generator)[:8192],
                         agent_config.position_feature)
    mean, std = probe.mean(0), probe.std(0) + 1e-4
    torch.manual_seed(agent_config.seed)
    net = build_mlp(probe.shape[1], list(agent_config.net_arch), ACTIVATION)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, int(epochs * states.count / TOKENS_PER_BATCH))
    passes = -(-steps * TOKENS_PER_BATCH // states.count)
    order = torch.cat([torch.randperm(states.count, generator=generator) for _ in range(passes)])
    started, last_log, loss = time.perf_counter(), time.perf_counter(), torch.zeros(())
    for step in range(steps):
        rows = order[step * TOKENS_PER_BATCH:(step + 1) * TOKENS_PER_BATCH]
        x = observations(adapter, states, rows, agent_config.position_feature)
        y = correct[rows].reshape(-1).long()
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(net((x - mean) / std), y)
        loss.backward()
        optimiser.step()
        if log is not None and (time.perf_counter() - last_log > 30 or step + 1 == steps):
            last_log = time.perf_counter()
            log(progress_line(f"teacher-forced agent, loss {loss.item():.3f}", (step + 1) * TOKENS_PER_BATCH,
                              steps * TOKENS_PER_BATCH, started))
    fold_standardisation(net, mean, std)
    obs_dim = probe.shape[1] - int(agent_config.position_feature)
    path = save_agent(output / "agent.safetensors", net.state_dict(), list(agent_config.net_arch), ACTIVATION,
                      obs_dim, sorted(states.exits), model_name, agent_config.position_feature)
    report = {"method": "supervised on teacher-forced states: cross-entropy on 'the exit's top-1 (through the exit "
                        "maps and shortlist head) equals the final layer's' per exit point",
              "epochs": epochs, "train_tokens": states.count, "examples": states.count * len(states.exits),
              "positive_rate": round(float(correct.float().mean()), 4), "seconds": round(time.perf_counter() - started, 1)}
    return path, report
