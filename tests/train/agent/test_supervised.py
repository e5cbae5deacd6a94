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
