from greencode.exits.agent import ExitAgent
from greencode.config import load_config
from train.agent.supervised import train_supervised_agent
from train.agent.trajectories import synthetic_cache


def test_the_supervised_agent_learns_when_an_exit_is_right(tmp_path):
    cache = synthetic_cache(samples=40)  # exiting is right iff feature 0 > 0
    report = train_supervised_agent(cache, load_config(overrides={}).agent, tmp_path, epochs=8, lr=3e-3)
    at_half = report["exit_rate_by_threshold"]["0.5"]
    assert at_half["optimal_exit_rate"] >= 0.9
    assert at_half["token_agreement"] >= 0.95
    assert report["full_depth_baseline"]["early_exit_rate"] == 0.0
    strict = report["exit_rate_by_threshold"]["0.92"]
    assert strict["mean_exit_layer"] >= at_half["mean_exit_layer"]  # a higher T never exits earlier
    agent = ExitAgent.load(tmp_path / "agent.safetensors", 64, [4, 6, 10])  # the format agent:T loads
    assert agent.net[0].in_features == 64


def test_the_teacher_forced_agent_learns_from_states_which_exits_are_right(tmp_path):
    import torch

    from train.agent.teacher_forced import as_trajectory_cache, train_teacher_forced_agent
    from train.assets.calibration import CalibrationStates

    class Norm:  # the adapter's final norm as the agent sees it: here the identity
        final_norm = staticmethod(lambda h: h)

    torch.manual_seed(0)
    count, width = 4000, 16
    exits = {4: torch.randn(count, width).half(), 6: torch.randn(count, width).half()}
    final_top1 = torch.randint(0, 50, (count,))
    right = {p: exits[p][:, 0] > 0 for p in exits}  # exiting is right iff feature 0 is positive
    tokens = torch.stack([torch.where(right[p], final_top1, final_top1 + 1) for p in (4, 6)], dim=1)
    states = CalibrationStates(exits, exits[6], torch.stack([final_top1] * 3, 1), torch.zeros(count, 3),
                               torch.zeros(count, dtype=torch.int64))
    path, report = train_teacher_forced_agent(Norm(), states, tokens, load_config(overrides={}).agent, "tiny",
                                              tmp_path, epochs=3, lr=3e-3)
    assert report["train_tokens"] == count and report["examples"] == 2 * count
    agent = ExitAgent.load(path, width, [4, 6])
    held_out = as_trajectory_cache(Norm(), states, tokens, 8, "tiny", seq_len=100)
    assert held_out.observations.shape == (count, 2, width) and held_out.sample[-1] == count // 100 - 1
    from train.agent.report import exit_probabilities

    exits_now = exit_probabilities(agent, held_out) >= 0.5
    assert (exits_now == held_out.correct).mean() >= 0.95  # it learned which exits are right
