"""Throughput of the replaying environment and of PPO on it, side by side with CartPole in one run.

CartPole-v1 (gymnasium's own, a few float ops per step) is the baseline: PPO on our env should run
about as fast as PPO on the cheapest standard env, i.e. the environment is not the bottleneck. The
acceptance targets (raw env >= 20,000 steps/s, PPO with a 64-unit MLP >= 1,500 steps/s on 2 cores)
are reported as ratios too. The CPU load average is recorded, since other work shares the machine.
"""

from __future__ import annotations

import os
import time

import numpy as np

from train.agent.env import EarlyExitEnv
from train.agent.trajectories import TrajectoryCache, synthetic_cache

ENV_TARGET, PPO_TARGET = 20_000, 1_500  # steps/s, issue #5
DEFAULT_SHAPE = {"exit_points": (4, 6, 8, 10, 12, 14, 19, 23, 27), "num_layers": 30, "obs_dim": 576}  # SmolLM2-135M


def raw_steps_per_s(env, steps: int, seed: int = 0) -> float:
    """Random actions (drawn beforehand), resetting at episode ends."""
    actions = np.random.default_rng(seed).integers(0, 2, size=steps).tolist()
    env.reset(seed=seed)
    started = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - started)


def ppo_steps_per_s(env, agent_config, timesteps: int, threads: int) -> float:
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    from train.agent.ppo import make_ppo, torch_threads

    model = make_ppo(VecMonitor(DummyVecEnv([lambda: env])), agent_config, agent_config.seed)
    with torch_threads(threads):
        started = time.perf_counter()
        model.learn(total_timesteps=timesteps)
        return model.num_timesteps / (time.perf_counter() - started)


def run_benchmark(agent_config, cache: TrajectoryCache | None = None, env_steps: int = 200_000,
                  ppo_timesteps: int = 12_288, threads: tuple[int, ...] = (1, 2)) -> dict:
    """agent_config gives the PPO settings (Table III defaults; n_envs is forced to 1, the paper's setup)."""
    import dataclasses

    import gymnasium as gym

    cache = cache if cache is not None else synthetic_cache(samples=100, **DEFAULT_SHAPE)
    agent_config = dataclasses.replace(agent_config, n_envs=1)
    load_before = os.getloadavg()[0]
    ours = EarlyExitEnv(cache, agent_config.reward, agent_config.position_feature)
    cartpole = gym.make("CartPole-v1").unwrapped  # no wrappers, like ours
    env_ours, env_cartpole = raw_steps_per_s(ours, env_steps), raw_steps_per_s(cartpole, env_steps)
    ppo = {t: ppo_steps_per_s(ours, agent_config, ppo_timesteps, t) for t in threads}
    best_threads = max(ppo, key=ppo.get)
    ppo_cartpole = ppo_steps_per_s(cartpole, agent_config, ppo_timesteps, best_threads)
    best = ppo[best_threads]
    return {
        "env": {"model": cache.model_name, "obs_dim": cache.obs_dim, "exit_points": list(cache.exit_points),
                "tokens": cache.num_tokens},
        "ppo": {"n_steps": agent_config.n_steps, "batch_size": agent_config.batch_size,
                "n_epochs": agent_config.n_epochs, "net_arch": list(agent_config.net_arch), "timesteps": ppo_timesteps},
        "raw_env_steps_per_s": round(env_ours, 1),
        "raw_cartpole_steps_per_s": round(env_cartpole, 1),
        "raw_env_vs_cartpole": round(env_ours / env_cartpole, 3),
        "raw_env_vs_target": round(env_ours / ENV_TARGET, 2),
        "ppo_steps_per_s_by_threads": {str(t): round(v, 1) for t, v in ppo.items()},
        "ppo_best_threads": best_threads,
        "ppo_cartpole_steps_per_s": round(ppo_cartpole, 1),  # at the best thread count
        "ppo_vs_cartpole": round(best / ppo_cartpole, 3),
        "ppo_vs_target": round(best / PPO_TARGET, 2),
        "minutes_for_500k_steps": round(500_000 / best / 60, 1),
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
