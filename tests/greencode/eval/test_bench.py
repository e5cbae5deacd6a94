import json
import sys

import pytest

from greencode.eval.bench import PolicyTotals, run_bench
from greencode.decoding.engine import EarlyExitEngine
from tests.cli import run_cli


def _prompts(loaded):
    text = open(sys.modules["greencode.eval.bench"].__file__).read()
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    return [ids[:120], ids[200:330]]


def test_bench_rows_compare_policies_on_the_same_prompts(tiny_model):
    engine = EarlyExitEngine(tiny_model)
    result = run_bench(engine, _prompts(tiny_model), ["full", "fixed:4", "confidence:0.0"], 6, compare_hf=True)
    rows = {row["policy"]: row for row in result["rows"]}
    assert set(rows) == {"full", "fixed:4", "confidence:0.0", "hf-generate"}
    assert rows["full"]["identical_to_hf"] is True  # full depth is exactly HF's greedy output
    assert rows["full"]["time_ratio_vs_hf"] > 0
    assert rows["full"]["mean_exit_layer"] == tiny_model.num_layers and rows["full"]["layers_skipped_frac"] == 0
    # The first token of each completion comes from the prefill (full depth); the rest exit at layer 4.
    assert rows["fixed:4"]["mean_exit_layer"] == pytest.approx((12 + 5 * 4) / 6, abs=1e-3)
    assert rows["fixed:4"]["joules_saved_frac"] > 0
    assert all(row["tokens"] == 12 for row in result["rows"])
    assert rows["full"]["speedup_vs_full"] == 1.0
    # Every early-exit row says how much of its modelled speed-up the clock delivered, from its own figures.
    for name in ("fixed:4", "confidence:0.0"):
        row = rows[name]
        measured = row["tokens_per_s"] / rows["full"]["tokens_per_s"]
        assert row["measured_over_modelled"] == pytest.approx(measured / row["modelled_speedup"], abs=1e-3)
    assert "measured_over_modelled" not in rows["full"] and "measured_over_modelled" not in rows["hf-generate"]


def test_policy_totals_row_arithmetic():
    from greencode.decoding.events import CompletionSummary, Figures

    totals = PolicyTotals("fixed:4", Figures(12))
    summary = CompletionSummary("x", 5, 10, 0, 2.0, 1.0, 3.0, "estimate", 6.0, 6.0, 0.5, "length", [12, 4, 4, 4, 6])
    totals.add(summary)
    row = totals.row()
    assert row["tokens_per_s"] == 2.0  # 4 decode tokens in 2 s
    assert row["seconds"] == 3.0 and row["joules_saved_frac"] == 0.5
    assert row["layers_skipped_frac"] == round(1 - 30 / 60, 4)


def test_bench_command_prints_json_and_skips_a_missing_agent():
    result = run_cli("bench", "--model", "tiny-random-gpt2", "--prompts", "2", "--max-new-tokens", "4",
                     "--policies", "full,fixed:6,agent:0.9", "--min-context", "50", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [r["policy"] for r in data["rows"]] == ["full", "fixed:6"]
    assert any("skipped agent:0.9" in note for note in data["notes"])
    assert 0 < data["agent_decision"]["fraction_of_full_token"] < 1
    for row in data["rows"]:
        assert {"policy", "tokens_per_s", "mean_exit_layer", "layers_skipped_frac", "joules", "energy_source",
                "seconds"} <= set(row)


def test_bench_table_is_readable_when_piped():
    result = run_cli("bench", "--model", "tiny-random-gpt2", "--prompts", "1", "--max-new-tokens", "3",
                     "--policies", "full,fixed:6", "--min-context", "50", "--no-llama-cpp")
    assert result.returncode == 0, result.stderr
    assert "fixed:6" in result.stdout and "…" not in result.stdout  # no cell cut to an ellipsis


def test_bench_command_rejects_a_bad_policy():
    result = run_cli("bench", "--model", "tiny-random-gpt2", "--policies", "full,warp:9")
    assert result.returncode == 2 and "unknown policy 'warp:9'" in result.stderr


def test_bench_scores_off_rows_run_the_same_policy_without_recording(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)
    result = run_bench(engine, _prompts(tiny_llama), ["full", "confidence:0.005"], 5, scores_off=True)
    rows = {row["policy"]: row for row in result["rows"]}
    assert set(rows) == {"full", "confidence:0.005", "confidence:0.005 (scores off)"}
    on, off = rows["confidence:0.005"], rows["confidence:0.005 (scores off)"]
    assert on["mean_exit_layer"] == off["mean_exit_layer"] and on["tokens"] == off["tokens"]
