"""PPO on the replaying env: learning on a synthetic cache, the exported actor, the report and plots."""

import json

import numpy as np
import pytest

from greencode.exits.agent import ExitAgent
from greencode.config import load_config, replace
from train.agent.report import exit_probabilities, policy_figures
from train.agent.ppo import export_agent, make_ppo, make_vec_env, train_agent
from train.agent.trajectories import build_cache, synthetic_cache

SHORT = {"n_steps": 512, "batch_size": 64, "n_epochs": 4, "learning_rate": 1e-3}  # a short run that learns


def agent_config(**keys):
    return replace(load_config(overrides={}), agent={**SHORT, **keys}).agent


def decision_rate(agent_path, cache):
    probs = exit_probabilities(ExitAgent.load(agent_path), cache)
    return policy_figures(probs > 0.5, cache)["optimal_decision_rate"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output = tmp_path_factory.mktemp("agent")
    config = agent_config(seed=1)
    report = train_agent(synthetic_cache(samples=32, seed=1), config, output, timesteps=8192)
    return output, report, config


def test_ppo_learns_the_optimal_exit_on_a_synthetic_cache(trained, tmp_path):
    output, report, config = trained
    unseen = synthetic_cache(samples=100, seed=99)  # the rule generalises, not the samples
    untrained = make_ppo(make_vec_env(synthetic_cache(samples=32, seed=1), config, 1), config, 1)
    before = decision_rate(export_agent(untrained, tmp_path / "untrained.safetensors", unseen, config), unseen)
    after = decision_rate(output / "agent.safetensors", unseen)
    assert after >= 0.9 > before + 0.2
    assert report["optimal_decision_rate"] >= 0.9  # held-out samples of the training cache
    assert report["mean_step_reward"] > report["mean_step_reward_first_episodes"] + 0.2


def test_the_report_plots_and_logs_are_written(trained):
    output, report, _ = trained
    on_disk = json.loads((output / "agent.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    for key in ("timesteps", "steps_per_s", "mean_step_reward", "optimal_exit_rate", "exit_histogram"):
        assert key in on_disk
    assert on_disk["timesteps"] == 8192 and on_disk["steps_per_s"] > 0
    assert set(on_disk["exit_rate_by_threshold"]) == {"0.6", "0.8", "0.9", "0.92"}
    layers = on_disk["exit_rate_by_threshold"]
    # a stricter threshold never exits earlier on average
    assert layers["0.6"]["mean_exit_layer"] <= layers["0.8"]["mean_exit_layer"] <= layers["0.92"]["mean_exit_layer"]
    assert set(on_disk["exit_histogram"]["optimal"]) == {"4", "6", "10", "12"}
    assert sum(on_disk["exit_histogram"]["optimal"].values()) == 32 * 15
    for png in ("reward_curve.png", "exit_histogram.png"):
        assert (output / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (output / "episodes.csv").read_text().splitlines()
    assert rows[0] == "episode,steps,reward,mean_step_reward" and len(rows) - 1 == on_disk["episodes"]
    assert (output / "logs" / "progress.csv").stat().st_size > 0


@pytest.mark.parametrize("position_feature", [False, True])
def test_the_exported_actor_decides_as_sb3_predict(tmp_path, position_feature):
    import torch

    config = agent_config(position_feature=position_feature, n_steps=256, batch_size=64, n_epochs=1)
    cache = synthetic_cache(samples=8, seed=2)
    env = make_vec_env(cache, config, 2)
    model = make_ppo(env, config, 2)
    model.learn(512)  # move the weights off their initialisation
    agent = ExitAgent.load(export_agent(model, tmp_path / "a.safetensors", cache, config), 64, [4, 6, 10])
    assert agent.position_feature is position_feature
    obs = np.stack([env.envs[0].unwrapped.reset(seed=s)[0] for s in range(50)] +
                   [env.envs[0].unwrapped.step(0)[0] for _ in range(50)])
    actions, _ = model.predict(obs, deterministic=True)
    probs = agent.prob_exit(torch.from_numpy(obs)).numpy()
    np.testing.assert_array_equal((probs > 0.5).astype(int), actions)
    sb3_probs = model.policy.get_distribution(torch.from_numpy(obs)).distribution.probs[:, 1].detach().numpy()
    np.testing.assert_allclose(probs, sb3_probs, rtol=1e-5, atol=1e-6)


def test_table_iii_settings_reach_sb3(tmp_path):
    config = agent_config(n_steps=4096, batch_size=512, n_epochs=6, learning_rate=5e-5, gamma=0.99,
                          net_arch=[32, 32], n_envs=2)
    model = make_ppo(make_vec_env(synthetic_cache(samples=4), config, 0), config, 0)
    assert (model.n_steps * model.n_envs, model.batch_size, model.n_epochs, model.gamma) == (4096, 512, 6, 0.99)
    assert model.lr_schedule(1.0) == pytest.approx(5e-5) and model.lr_schedule(0.25) == pytest.approx(1.25e-5)
    assert [m.out_features for m in model.policy.mlp_extractor.policy_net if hasattr(m, "out_features")] == [32, 32]


def test_an_agent_trained_on_tiny_llama_trajectories_runs_in_the_engine(tmp_path, tiny_llama):
    from greencode.data import CodeFile
    from greencode.decoding.engine import EarlyExitEngine

    files = [CodeFile("a.py", "import os\n\n" + "".join(f"x{i} = os.path.join('a', '{i}')\n" for i in range(40)),
                      "python")]
    cache = build_cache(tiny_llama, [4, 6, 10], files, samples=3, tokens_per_sample=4, seed=0)
    config = agent_config(n_steps=128, batch_size=64, n_epochs=1)
    report = train_agent(cache, config, tmp_path, timesteps=256)
    engine = EarlyExitEngine(tiny_llama, exit_points=[4, 6, 10], agent_path=str(tmp_path / "agent.safetensors"))
    summary = engine.complete("def f(x):\n    return", "agent:0.5", max_new_tokens=6)
    assert summary.tokens == 6 and set(summary.exit_layers) <= {4, 6, 10, 12}
    assert report["model"] == "tiny-random-llama"


def test_the_benchmark_reports_both_envs_side_by_side():
    from train.agent.bench import run_benchmark

    result = run_benchmark(agent_config(n_steps=128, batch_size=64, n_epochs=1), synthetic_cache(samples=4),
                           env_steps=2000, ppo_timesteps=256, threads=(1,))
    assert result["raw_env_steps_per_s"] > 0 and result["raw_cartpole_steps_per_s"] > 0
    assert result["raw_env_vs_cartpole"] == pytest.approx(
        result["raw_env_steps_per_s"] / result["raw_cartpole_steps_per_s"], rel=0.01)
    assert set(result["ppo_steps_per_s_by_threads"]) == {"1"} and result["ppo_best_threads"] == 1
    assert result["env"]["obs_dim"] == 64
