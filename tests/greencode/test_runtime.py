"""greencode.runtime: the one place a config becomes an engine, and the one no-agent fallback."""


import pytest

from greencode.config import load_config
from greencode.errors import GreencodeError
from greencode.runtime import engine_from_config, policy_or_fallback
from tests.cli import run_cli


def test_engine_from_config_keeps_the_configured_context_and_exits(tiny_llama):
    config = load_config(None, {"engine.max_context_tokens": 32, "exits.points": [4, 8]})
    engine = engine_from_config(config, tiny_llama)
    assert engine.max_context_tokens == 32 and engine.exit_points == [4, 8]
    summary = engine.complete("x = 1\n" * 100, max_new_tokens=2)
    assert summary.prompt_tokens == 32 and summary.dropped_prompt_tokens > 0


def test_agent_falls_back_to_confidence_on_a_model_without_an_agent(tiny_llama):
    engine = engine_from_config(load_config(), tiny_llama)
    policy, note = policy_or_fallback(engine, "agent:0.8")
    assert policy.name == "confidence:0.8"
    assert note.startswith("tiny-random-llama has no exit agent for agent:0.8: using confidence:0.8")
    policy, note = policy_or_fallback(engine, "agent:0.8", threshold=0.5)
    assert policy.name == "confidence:0.5" and "using confidence:0.5" in note
    assert policy_or_fallback(engine, "agent:0.7:0.5:2")[0].name == "confidence:0.7"  # T of agent:T:C:R
    assert policy_or_fallback(engine, "fixed:4") == (engine.make_policy("fixed:4"), None)
    with pytest.raises(GreencodeError, match="not an exit point"):
        policy_or_fallback(engine, "fixed:5")


def test_complete_on_a_model_without_an_agent_says_so_and_runs(tmp_path):
    code = tmp_path / "a.py"
    code.write_text("def f(x):\n    return x\n")
    result = run_cli("complete", str(code), "--model", "tiny-random-llama", "--max-new-tokens", "3")
    assert result.returncode == 0, result.stderr
    assert "has no exit agent for agent:0.9: using confidence:0.9" in result.stderr
    assert "confidence:0.9: 3 tokens" in result.stdout
