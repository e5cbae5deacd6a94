"""PPO on EarlyExitEnv (paper V, Table III), export to the `agent:T` format, and the training report.

Hyperparameters come from [agent]: timesteps, n_steps (the rollout buffer across all environments),
batch_size, n_epochs, learning_rate (linear schedule to 0), gamma, net_arch (tanh MLP, separate policy
and value networks). Writes to the output directory:
  agent.safetensors   the actor as a plain nn.Sequential (greencode.exits.agent format; never a pickle)
  agent.json          the report (see agent_report.build_report)
  reward_curve.png    mean step reward per episode, moving average over 50 episodes (paper Fig. 6)
  exit_histogram.png  optimal exits in the cache vs the agent's exits on held-out tokens (paper Fig. 7)
  episodes.csv        one row per training episode; logs/progress.csv (SB3; TensorBoard too if installed)
"""

from __future__ import annotations

import csv
import importlib.util
import time
from contextlib import contextmanager
from pathlib import Path

from train.agent.env import EarlyExitEnv
from train.agent.trajectories import TrajectoryCache

HELD_OUT_FRACTION = 0.1  # samples kept out of training for the report
ACTIVATION = "tanh"  # SB3's default for PPO's MlpPolicy, and what the exported Sequential uses
# A 64-unit MLP is fastest on one thread; a second one mostly waits (and collapses when the CPU is shared:
# `greencode train agent --benchmark` measures both).
PPO_THREADS = 1


def linear_schedule(initial: float):
    """Learning rate decaying linearly to 0 over training (SB3 passes the remaining progress, 1 -> 0)."""
    return lambda progress_remaining: progress_remaining * initial


def make_vec_env(cache: TrajectoryCache, agent_config, seed: int):
    """n_envs replaying environments (in-process: each step is microseconds, so no subprocesses)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    def factory():
        return EarlyExitEnv(cache, agent_config.reward, agent_config.position_feature)

    vec = VecMonitor(DummyVecEnv([factory] * agent_config.n_envs))
    vec.seed(seed)
    return vec


def make_ppo(env, agent_config, seed: int):
    """SB3 PPO with the Table III settings of [agent]."""
    from stable_baselines3 import PPO
    from torch import nn

    n_steps = max(2, agent_config.n_steps // agent_config.n_envs)  # per environment
    buffer = n_steps * agent_config.n_envs
    arch = list(agent_config.net_arch)
    return PPO("MlpPolicy", env, n_steps=n_steps, batch_size=min(agent_config.batch_size, buffer),
               n_epochs=agent_config.n_epochs, learning_rate=linear_schedule(agent_config.learning_rate),
               gamma=agent_config.gamma, seed=seed, device="cpu", verbose=0,
               policy_kwargs={"net_arch": {"pi": arch, "vf": arch}, "activation_fn": nn.Tanh})


def actor_state_dict(model) -> dict:
    """The policy network + action head of an SB3 PPO model as one nn.Sequential's state dict
    (Linear, Tanh, ..., Linear), the layout greencode.exits.agent.build_mlp rebuilds."""
    from greencode.exits.agent import build_mlp

    policy = model.policy
    linears = [m for m in policy.mlp_extractor.policy_net if hasattr(m, "weight")] + [policy.action_net]
    net = build_mlp(linears[0].in_features, [m.out_features for m in linears[:-1]], ACTIVATION)
    targets = [m for m in net if hasattr(m, "weight")]
    for source, target in zip(linears, targets, strict=True):
        target.load_state_dict(source.state_dict())
    return net.state_dict()


def export_agent(model, path: str | Path, cache: TrajectoryCache, agent_config) -> Path:
    from greencode.exits.agent import save_agent

    return save_agent(path, actor_state_dict(model), list(agent_config.net_arch), ACTIVATION, cache.obs_dim,
                      list(cache.exit_points), cache.model_name, agent_config.position_feature)


def _episode_logger(progress=None, total: int = 0, every: int = 512):
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeLog(BaseCallback):
        """Per-episode return and length (VecMonitor's info['episode']) for the reward curve, and a
        progress report every `every` steps (a bar redrawn per step would cost more than the step)."""

        def __init__(self):
            super().__init__()
            self.episodes: list[tuple[int, float]] = []

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.episodes.append((int(info["episode"]["l"]), float(info["episode"]["r"])))
            if progress is not None and self.num_timesteps % every < self.training_env.num_envs:
                progress(self.num_timesteps, total)
            return True

    return EpisodeLog()


def _configure_logs(model, output: Path) -> list[str]:
    from stable_baselines3.common.logger import configure

    formats = ["csv"] + (["tensorboard"] if importlib.util.find_spec("tensorboard") else [])
    model.set_logger(configure(str(output / "logs"), formats))
    return formats


@contextmanager
def torch_threads(count: int):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_agent(cache: TrajectoryCache, agent_config, output: str | Path, timesteps: int | None = None,
                progress=None, run=None) -> dict:
    """Train on most samples, report on the held-out rest, export; returns the report (also agent.json).

    `progress(steps_done, steps_total)` is called every few hundred steps. With `run` (a
    train.agent.run.AgentRun) PPO is checkpointed during training and on Ctrl-C, and continues from its
    checkpoint when the run is being resumed."""
    from train.agent.report import build_report, write_report

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    timesteps = timesteps or agent_config.timesteps
    train_part, held_out = cache.split(HELD_OUT_FRACTION, agent_config.seed)
    reused = held_out.num_tokens == 0
    if reused:  # a one-sample cache: report on what was trained on, and say so
        held_out = train_part
    env = make_vec_env(train_part, agent_config, agent_config.seed)
    resuming = run is not None and run.resuming
    model = run.load(env, agent_config) if resuming else make_ppo(env, agent_config, agent_config.seed)
    log_formats = _configure_logs(model, output)
    episodes = _episode_logger(progress, timesteps)
    callbacks = [episodes]
    if run is not None:
        episodes.episodes = run.episodes  # the reward curve goes on where the interrupted run stopped
        callbacks.append(run.callback(episodes))
    with torch_threads(PPO_THREADS):
        started = time.perf_counter()
        try:
            model.learn(total_timesteps=max(0, timesteps - model.num_timesteps), callback=callbacks,
                        reset_num_timesteps=not resuming)
        except KeyboardInterrupt:
            if run is not None:
                run.save(model, episodes.episodes)
            raise
        seconds = time.perf_counter() - started
    agent_path = export_agent(model, output / "agent.safetensors", cache, agent_config)
    _write_episodes(output / "episodes.csv", episodes.episodes)
    report = build_report(agent_path, cache, held_out, episodes.episodes, agent_config,
                          timesteps=int(model.num_timesteps), seconds=seconds,
                          held_out_samples=len(held_out.sample_bounds()), log_formats=log_formats)
    report["held_out"]["same_as_training"] = reused
    if run is not None:
        report["agent"] = str(run.output / "agent.safetensors")  # where it lands when the run is finished
    write_report(report, output, cache, held_out, episodes.episodes, agent_path)
    return report


def _write_episodes(path: Path, episodes: list[tuple[int, float]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["episode", "steps", "reward", "mean_step_reward"])
        for index, (steps, reward) in enumerate(episodes):
            writer.writerow([index, steps, f"{reward:.6f}", f"{reward / max(steps, 1):.6f}"])
