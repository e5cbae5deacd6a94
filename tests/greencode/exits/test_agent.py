import json

import pytest
import torch

from greencode.exits.agent import ExitAgent, agent_observation, build_mlp, save_agent
from greencode.decoding.engine import EarlyExitEngine
from greencode.errors import GreencodeError

PROMPT = "for index, value in enumerate(values):\n    print(index,"


def _write_agent(path, hidden, exits, exit_bias: float, position_feature=False):
    torch.manual_seed(0)
    net = build_mlp(hidden + position_feature, [8, 8])
    with torch.no_grad():
        net[-1].bias.copy_(torch.tensor([0.0, exit_bias]))  # push P(exit) towards 0 or 1
        net[-1].weight.zero_()
    return save_agent(path, net.state_dict(), [8, 8], "tanh", hidden, exits, "tiny", position_feature)


def test_agent_round_trip_and_probabilities(tmp_path):
    path = _write_agent(tmp_path / "agent.safetensors", 64, [4, 6, 10], exit_bias=5.0)
    agent = ExitAgent.load(path, 64, [4, 6, 10])
    p = agent.prob_exit(torch.randn(3, 64))
    assert p.shape == (3,) and torch.all(p > 0.99)
    assert agent.exit_points == [4, 6, 10]


def test_agent_policy_in_the_engine(tmp_path, tiny_llama):
    exits = [4, 6, 10]
    eager = _write_agent(tmp_path / "eager.safetensors", 64, exits, exit_bias=5.0)
    engine = EarlyExitEngine(tiny_llama, agent_path=str(eager))
    summary = engine.complete(PROMPT, "agent:0.9", max_new_tokens=4)
    assert summary.exit_layers[1:] == [4, 4, 4]
    assert all(e.score > 0.99 and e.policy == "agent:0.9" for e in summary.events[1:])
    shy = _write_agent(tmp_path / "shy.safetensors", 64, exits, exit_bias=-5.0)
    engine = EarlyExitEngine(tiny_llama, agent_path=str(shy))
    assert engine.complete(PROMPT, "agent:0.9", max_new_tokens=4).exit_layers == [12] * 4
    assert engine.complete(PROMPT, "agent:0", max_new_tokens=3).exit_layers[1:] == [4, 4]


def test_observation_is_the_final_normed_state(tiny_llama):
    hidden = torch.randn(1, 1, 64)
    obs = agent_observation(tiny_llama.adapter, hidden)
    assert obs.shape == (64,) and obs.dtype == torch.float32
    assert torch.allclose(obs, tiny_llama.adapter.final_norm(hidden).reshape(-1))
    with_position = agent_observation(tiny_llama.adapter, hidden, exit_index=2, n_exits=3)
    assert with_position.shape == (65,) and with_position[-1] == 1.0


def test_mismatched_agents_are_refused(tmp_path):
    path = _write_agent(tmp_path / "agent.safetensors", 64, [4, 6, 10], exit_bias=0.0)
    with pytest.raises(GreencodeError, match="hidden size 64"):
        ExitAgent.load(path, 576, [4, 6, 10])
    with pytest.raises(GreencodeError, match="exit points \\[4, 6, 10\\]"):
        ExitAgent.load(path, 64, [4, 8])
    with pytest.raises(GreencodeError, match="not found"):
        ExitAgent.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 32)
    with pytest.raises(GreencodeError, match="not a greencode agent file"):
        ExitAgent.load(junk)


def test_agent_metadata_names_its_training(tmp_path):
    from safetensors import safe_open

    path = _write_agent(tmp_path / "agent.safetensors", 64, [4, 6, 10], exit_bias=0.0, position_feature=True)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert json.loads(meta["exit_points"]) == [4, 6, 10] and meta["hidden_size"] == "64"
    assert meta["model"] == "tiny" and meta["position_feature"] == "true"
    assert ExitAgent.load(path, 64).prob_exit(torch.zeros(65)).shape == ()


def test_confirm_at_exit_vetoes_unsure_exits_and_pays_the_head_it_decoded(tmp_path, tiny_llama):
    eager = _write_agent(tmp_path / "eager.safetensors", 64, [4, 6, 10], exit_bias=5.0)
    engine = EarlyExitEngine(tiny_llama, agent_path=str(eager))
    free = engine.complete(PROMPT, "agent:0.9:0", max_new_tokens=4)
    sure = engine.complete(PROMPT, "agent:0.9:0.000001", max_new_tokens=4)  # every exit's max prob is above it
    assert free.exit_layers[1:] == sure.exit_layers[1:] == [4, 4, 4]
    assert [e.token_id for e in sure.events] == [e.token_id for e in free.events]
    assert [e.modelled_units for e in sure.events] == [e.modelled_units for e in free.events]  # the head it needs anyway
    vetoed = engine.complete(PROMPT, "agent:0.9:1", max_new_tokens=4)  # no max prob reaches 1: every exit vetoed
    assert vetoed.exit_layers == [12] * 4
    full = engine.complete(PROMPT, "full", max_new_tokens=4)
    assert [e.token_id for e in vetoed.events] == [e.token_id for e in full.events]
    head = engine.cost.exit_head_units
    assert all(abs(v.modelled_units - f.modelled_units - 3 * head) < 1e-6  # three proposals, three heads paid
               for v, f in zip(vetoed.events[1:], full.events[1:]))


def test_the_ramp_makes_a_completions_first_tokens_stricter(tmp_path, tiny_llama):
    agent = _write_agent(tmp_path / "agent.safetensors", 64, [4, 6, 10], exit_bias=2.5)  # P(exit) = 0.924
    engine = EarlyExitEngine(tiny_llama, agent_path=str(agent))
    assert engine.complete(PROMPT, "agent:0.9:0:0", max_new_tokens=4).exit_layers == [12, 4, 4, 4]
    # R = 1: the first decoded token needs 1 - 0.1 / 2 = 0.95, the rest 0.9
    ramped = engine.complete(PROMPT, "agent:0.9:0:1", max_new_tokens=4)
    assert ramped.exit_layers == [12, 12, 4, 4]
    assert all(e.policy == "agent:0.9:0:1" for e in ramped.events[1:])  # the row keeps the policy's own name


def test_agent_form_spells_out_only_what_differs_from_the_calibrated_defaults(tmp_path, tiny_llama):
    from greencode.exits.policies import parse_policy

    agent = ExitAgent.load(_write_agent(tmp_path / "agent.safetensors", 64, [4, 6, 10], exit_bias=0.0))
    made = lambda text, defaults: parse_policy(text, [4, 6, 10], lambda: agent, tiny_llama.adapter, defaults)
    assert made("agent:0.9", (0.5, 2)).name == "agent:0.9"
    assert (made("agent:0.9", (0.5, 2)).confirm, made("agent:0.9", (0.5, 2)).ramp) == (0.5, 2)
    assert made("agent:0.9:0:0", (0.5, 2)).name == "agent:0.9:0:0"
    assert made("agent:0.9:0.5:2", (0.5, 2)).name == "agent:0.9"
    assert made("agent:0.8:0.3", (0.5, 2)).with_threshold(0.7).name == "agent:0.7:0.3"
    assert made("agent:0.9", (0.0, 0)).name == "agent:0.9"
