"""EarlyExitEnv and the rewards of eq. 2 and 3, on caches built in memory (no LLM)."""

from types import SimpleNamespace

import numpy as np
import pytest

from greencode.config import RewardConfig
from greencode.errors import GreencodeError
from train.agent.env import CONTINUE, EXIT, EarlyExitEnv, continue_reward, exit_reward
from train.agent.trajectories import TrajectoryCache, synthetic_cache

REWARD = RewardConfig(alpha=0.2, beta=0.6, gamma=0.4, epsilon=0.05)
E = 4  # exit points; position 4 is the final layer


@pytest.mark.parametrize("curr, opt, correct, expected, case", [
    (1, 1, True, 1.0, "optimal_exit"),           # the first agreeing exit point
    (0, 0, True, 1.0, "optimal_exit"),
    (3, 1, True, -(2 / 4) * 0.2, "late_exit"),     # correct, 2 exit points too late: alpha
    (2, 0, True, -(2 / 4) * 0.2, "late_exit"),
    (0, 3, False, -(3 / 4) * 0.6, "early_exit"),   # wrong, 3 too early: beta
    (0, 4, False, -(4 / 4) * 0.6, "early_exit"),   # no exit point agrees: the largest distance, E
    (2, 1, False, -0.05, "wrong_late_exit"),       # disagrees again after l_opt: epsilon
    (4, 4, True, 1.0, "optimal_exit"),             # the final layer when nothing earlier agrees
    (4, 0, True, -(4 / 4) * 0.2, "late_exit"),      # the final layer when exit point 0 already agreed
])
def test_exit_reward_matches_eq2_case_by_case(curr, opt, correct, expected, case):
    from train.agent.env import EXIT_CASES

    value, code = exit_reward(curr, opt, correct, E, REWARD)
    assert float(value) == pytest.approx(expected)
    assert EXIT_CASES[int(code)] == case


@pytest.mark.parametrize("curr, opt, expected, case", [
    (0, 2, 1.0, "optimal_continue"),
    (1, 4, 1.0, "optimal_continue"),
    (2, 2, -(1 / 4) * 0.4, "late_continue"),   # should have exited here: l_next - l_opt = 1
    (3, 0, -(4 / 4) * 0.4, "late_continue"),
    (1, 0, -(2 / 4) * 0.4, "late_continue"),
])
def test_continue_reward_matches_eq3_case_by_case(curr, opt, expected, case):
    from train.agent.env import CONTINUE_CASES

    value, code = continue_reward(curr, opt, E, REWARD)
    assert float(value) == pytest.approx(expected)
    assert CONTINUE_CASES[int(code)] == case


def test_every_penalty_lies_in_minus_one_to_zero_even_at_the_largest_coefficients():
    harsh = RewardConfig(alpha=1.0, beta=1.0, gamma=1.0, epsilon=1.0)
    curr, opt = np.meshgrid(np.arange(E + 1), np.arange(E + 1), indexing="ij")
    for correct in (curr >= opt, np.zeros_like(curr, bool)):
        value, _ = exit_reward(curr, opt, correct, E, harsh)
        assert value.min() >= -1.0 and value.max() <= 1.0
        assert set(np.unique(value[value > 0])) <= {1.0}
    value, _ = continue_reward(curr[:E], opt[:E], E, harsh)
    assert value.min() >= -1.0 and value.max() <= 1.0


def _cache(correct_rows, samples):
    """A hand-made cache: observation = [token, position] so a test can tell where the env is."""
    correct = np.asarray(correct_rows, bool)
    n, e = correct.shape
    obs = np.stack(np.meshgrid(np.arange(n), np.arange(e), indexing="ij"), axis=-1).astype(np.float32)
    final = np.arange(n) * 10
    exit_top1 = np.where(correct, final[:, None], final[:, None] + 1)
    return TrajectoryCache(obs, exit_top1, final, np.asarray(samples), (2, 4, 6), 8, "handmade")


def test_a_scripted_episode_gets_eq2_and_eq3_rewards_and_reports_them_in_info():
    # token 0: l_opt = 1; token 1: nothing agrees (l_opt = 3 = final layer).
    env = EarlyExitEnv(_cache([[False, True, True], [False, False, False]], [0, 0]), REWARD)
    obs, info = env.reset(seed=1)
    assert obs.tolist() == [0, 0] and info["tokens"] == 2
    obs, reward, terminated, truncated, info = env.step(CONTINUE)
    assert reward == 1.0 and info["case"] == "optimal_continue" and info["reward_exit"] == 0.0
    assert obs.tolist() == [0, 1] and not terminated
    obs, reward, terminated, _, info = env.step(EXIT)
    assert reward == 1.0 and info["case"] == "optimal_exit" and info["exit_layer"] == 4
    assert info["reward_continue"] == 0.0 and obs.tolist() == [1, 0]  # next token, first exit point
    obs, reward, terminated, truncated, info = env.step(EXIT)  # wrong and 3 exit points early
    assert reward == pytest.approx(-(3 / 3) * 0.6) and info["case"] == "early_exit"
    assert terminated and not truncated  # the sample's last token is done


def test_continuing_past_the_last_exit_point_ends_the_token_as_a_final_layer_exit():
    env = EarlyExitEnv(_cache([[True, True, True], [False, False, False]], [0, 0]), REWARD)
    env.reset(seed=0)
    rewards, infos = [], []
    for _ in range(3):  # token 0: continue, continue, continue -> final layer, l_opt = 0
        obs, reward, terminated, _, info = env.step(CONTINUE)
        rewards.append(reward), infos.append(info)
    assert rewards[0] == pytest.approx(-(1 / 3) * 0.4) and rewards[1] == pytest.approx(-(2 / 3) * 0.4)
    assert rewards[2] == pytest.approx(-(3 / 3) * 0.2) and infos[2]["case"] == "late_exit"
    assert infos[2]["exit_layer"] == 8 and obs.tolist() == [1, 0] and not terminated
    for _ in range(3):  # token 1: nothing agrees, so going to the final layer is optimal
        obs, reward, terminated, _, info = env.step(CONTINUE)
    assert reward == 1.0 and info["case"] == "optimal_exit" and terminated


def test_an_episode_is_one_sample_and_reset_draws_samples_from_the_seed():
    cache = _cache([[True] * 3] * 5, [0, 0, 1, 1, 1])
    env = EarlyExitEnv(cache, REWARD)
    lengths = set()
    for seed in range(20):
        _, info = env.reset(seed=seed)
        steps, terminated = 0, False
        while not terminated:
            *_, terminated, _, _ = env.step(EXIT)
            steps += 1
        lengths.add(steps)
        assert steps == info["tokens"]
    assert lengths == {2, 3}


def test_the_env_passes_gymnasium_and_sb3_checkers_with_and_without_the_position_feature():
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    for position_feature in (False, True):
        env = EarlyExitEnv(synthetic_cache(samples=4), REWARD, position_feature=position_feature)
        gym_check(env, skip_render_check=True)
        sb3_check(env, warn=True)


def test_the_position_feature_is_appended_exactly_as_the_inference_observation_appends_it(tiny_llama):
    import torch

    from greencode.exits.agent import agent_observation

    env = EarlyExitEnv(synthetic_cache(samples=2, exit_points=(4, 6, 10, 11)), REWARD, position_feature=True)
    hidden = torch.randn(1, 1, 64)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (65,)
    for position in range(4):
        at_inference = agent_observation(tiny_llama.adapter, hidden, position, 4)
        assert obs[-1] == pytest.approx(float(at_inference[-1]))
        obs, *_ = env.step(CONTINUE)


def test_same_seed_same_episode():
    def run(seed):
        env = EarlyExitEnv(synthetic_cache(samples=16), REWARD)
        actions = np.random.default_rng(seed).integers(0, 2, 300)
        obs, _ = env.reset(seed=seed)
        trace = [obs.tobytes()]
        for action in actions:
            obs, reward, terminated, _, _ = env.step(int(action))
            trace.append((obs.tobytes(), reward))
            if terminated:
                obs, _ = env.reset()
                trace.append(obs.tobytes())
        return trace

    assert run(7) == run(7)
    assert run(7) != run(8)


@pytest.mark.parametrize("reward, message", [
    (RewardConfig(alpha=0.9, beta=0.2), "'agent.reward.alpha' \\(0.9\\) must be <= 'agent.reward.beta' \\(0.2\\)"),
    (RewardConfig(gamma=1.5), "'agent.reward.gamma' = 1.5 is out of range; allowed: \\[0.0, 1.0\\]"),
    (SimpleNamespace(alpha=0.1, beta=0.2, gamma=0.3, epsilon=-0.1), "'agent.reward.epsilon' = -0.1 is out of range"),
])
def test_a_reward_config_out_of_range_is_one_clear_error(reward, message):
    with pytest.raises(GreencodeError, match=message):
        EarlyExitEnv(synthetic_cache(samples=1), reward)


def test_an_empty_cache_is_one_clear_error():
    empty = synthetic_cache(samples=0)
    with pytest.raises(GreencodeError, match="trajectory cache is empty"):
        EarlyExitEnv(empty, REWARD)
