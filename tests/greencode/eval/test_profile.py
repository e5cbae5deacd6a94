"""`greencode bench --profile`: a decoded token's time by part, adding up to the measured token time."""

import json

import pytest
from typer.testing import CliRunner

from greencode.decoding.engine import EarlyExitEngine
from greencode.eval.profile import ORDER, format_profile, profile_policies


def test_parts_add_up_to_the_measured_token_time_and_go_where_the_policy_sends_them(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)
    text = open(__file__).read()
    ids = tiny_llama.tokenizer(text, add_special_tokens=False)["input_ids"]
    result = profile_policies(engine, [ids[:60], ids[60:130]], ["full", "fixed:4"], 5)
    rows = {row["policy"]: row for row in result["rows"]}
    for row in rows.values():
        assert row["tokens"] == 2 * 4  # the first token of each completion comes from the prefill
        assert sum(row[part] for part in ORDER) == pytest.approx(row["ms_per_token"], abs=2e-3)
        assert row["layers"] > 0 and row["embed"] > 0 and row["sampling"] > 0
    assert rows["full"]["full head"] > 0 and rows["full"]["propagation"] == 0 and rows["full"]["exit head"] == 0
    assert rows["fixed:4"]["propagation"] > 0 and rows["fixed:4"]["exit head"] > 0 and rows["fixed:4"]["full head"] == 0
    layer = result["layer"]
    assert layer["layer_ms"] > 0 and layer["gemm_ms"] > 0
    assert layer["rest_ms"] == pytest.approx(layer["layer_ms"] - layer["gemm_ms"] - layer["attention_ms"], abs=1e-3)
    lines = format_profile(result)
    assert lines[1].split()[:3] == ["policy", "ms/token", "embed"] and lines[2].startswith("full")
    # the engine is left as it was: its parts are no longer wrapped
    assert "run_layer" not in vars(engine.adapter) and "_exit_logits" not in vars(engine)


def test_bench_profile_command():
    from greencode.cli import app

    done = CliRunner().invoke(app, ["bench", "--model", "tiny-random-llama", "--prompts", "1", "--max-new-tokens",
                                    "3", "--policies", "full,fixed:4", "--min-context", "50", "--no-llama-cpp",
                                    "--profile", "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert [row["policy"] for row in data["rows"]] == ["full", "fixed:4"] and data["threads"] >= 1
