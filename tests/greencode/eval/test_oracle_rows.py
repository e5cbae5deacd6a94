"""The oracle reference row and each row's share of its saving (regret), in `greencode eval`."""

from __future__ import annotations

import json

import pytest

from greencode.decoding.engine import EarlyExitEngine
from greencode.exits.oracle import first_agreeing_exit, oracle_share
from tests.greencode.eval.test_evaluate import _cli, _config, _quiet, corpus  # noqa: F401 (fixture)


def test_oracle_row_modelled_speedup_and_regret(corpus, tmp_path, tiny_llama):  # noqa: F811
    from greencode.exits.agent import build_mlp, save_agent
    from greencode.exits.points import exit_points

    net = build_mlp(tiny_llama.hidden_size, [8, 8])
    agent = save_agent(tmp_path / "agent.safetensors", net.state_dict(), [8, 8], "tanh", tiny_llama.hidden_size,
                       exit_points(tiny_llama.num_layers), "tiny-random-llama")
    config = _config(corpus, tmp_path / "out", samples=3, policies=("full", "fixed:4", "confidence:0.9", "oracle"),
                     thresholds=(0.0,), **{"eval.max_new_tokens": 8})
    result, _ = _quiet(config, agent=str(agent))
    rows = {row["policy"]: row for row in result["rows"]}
    assert list(rows) == ["full", "fixed:4", "confidence:0.9", "oracle", "agent:0"]
    oracle, full = rows["oracle"], rows["full"]
    assert oracle["label"] == "oracle (modelled)"
    # Its text is full depth's, so its quality is too; its measured figures are left blank, not reported.
    assert oracle["rougeL"] == full["rougeL"] and oracle["exact_match"] == full["exact_match"]
    assert oracle["tokens_per_s"] is None and oracle["decode_joules"] is None and oracle["tokens_per_s_vs_full"] is None
    # Its exit layers are the first agreeing exit point of each full-depth token.
    records = [json.loads(line) for line in (tmp_path / "out" / "completions.jsonl").read_text().splitlines()]
    engine = EarlyExitEngine(tiny_llama)
    L = tiny_llama.num_layers
    from greencode.eval.samples import load_samples, read_corpus

    for sample in load_samples(config, tiny_llama.tokenizer, read_corpus(config)).samples:
        traced = engine.complete(sample.context_ids, max_new_tokens=8, record=True)
        want = [L] + [first_agreeing_exit(e.trace.exit_top1, e.token_id, engine.exit_points, L) for e in traced.events[1:]]
        got = next(r for r in records if r["key"] == sample.key and r["policy"] == "oracle")
        assert got["exit_layers"] == want
        assert got["prediction"] == next(r for r in records if r["key"] == sample.key and r["policy"] == "full")["prediction"]
    cost = engine.cost
    layers = [layer for r in records if r["policy"] == "oracle" for layer in r["exit_layers"][1:]]
    assert any(layer < L for layer in layers)  # this tiny model's exits agree on some tokens: a saving to share
    units = [cost.units(layer, 1) if layer < L else cost.full_units for layer in layers]
    assert oracle["modelled_speedup"] == pytest.approx(cost.full_units * len(units) / sum(units))
    assert oracle["mean_exit_layer"] < L
    # Rows that exit: modelled from their own exits; full depth is 1.0 by definition.
    assert full["modelled_speedup"] == pytest.approx(1.0)
    assert rows["fixed:4"]["modelled_speedup"] == pytest.approx(cost.full_units / cost.units(4, 1))
    for name in ("fixed:4", "confidence:0.9", "agent:0"):
        share = oracle_share(rows[name]["modelled_speedup"], oracle["modelled_speedup"])
        assert rows[name]["oracle_saving_share"] == pytest.approx(share)
        assert rows[name]["regret"] == pytest.approx(1 - share)
    assert rows["agent:0"]["oracle_saving_share"] > 1  # exiting at the first point everywhere saves more than it
    assert "regret" not in full and "regret" not in oracle
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| oracle (modelled) |" in markdown and "modelled x" in markdown and "regret" in markdown
    # Rows that exit: the share of their modelled speed-up the clock delivered, from their own figures.
    for name in ("fixed:4", "confidence:0.9", "agent:0"):
        row = rows[name]
        assert row["measured_over_modelled"] == pytest.approx(row["tokens_per_s_vs_full"] / row["modelled_speedup"])
    assert full.get("measured_over_modelled") is None and oracle.get("measured_over_modelled") is None
    assert "measured/modelled" in markdown


def test_oracle_share():
    assert oracle_share(2.0, 2.0) == pytest.approx(1.0)
    assert oracle_share(1.0, 2.0) == pytest.approx(0.0)
    assert oracle_share(1.5, 2.0) == pytest.approx((1 - 1 / 1.5) / 0.5)
    assert oracle_share(1.5, 1.0) is None and oracle_share(None, 2.0) is None


def test_cli_eval_with_the_oracle_row(corpus, tmp_path):  # noqa: F811
    done = _cli("--model", "tiny-random-llama", "--corpus", str(corpus), "--samples", "1", "--policies",
                "full,fixed:4,confidence:0.9,oracle", "--thresholds", "", "--out", str(tmp_path), "--quiet",
                "--data.test_fraction", "0.5", "--eval.max_context_tokens", "32", "--eval.max_new_tokens", "4")
    assert done.returncode == 0, done.stderr
    assert "| oracle (modelled) |" in done.stdout and "regret" in done.stdout
    assert (tmp_path / "tradeoff.png").is_file()


def test_bench_oracle_row_is_modelled_and_rows_get_their_share(tiny_llama):
    from greencode.eval.bench import run_bench
    from tests.greencode.eval.test_bench import _prompts

    engine = EarlyExitEngine(tiny_llama)
    result = run_bench(engine, _prompts(tiny_llama), ["full", "fixed:4", "oracle"], 8)
    rows = {row["policy"]: row for row in result["rows"]}
    oracle = rows["oracle"]
    assert oracle["tokens_per_s"] is None and oracle["joules"] is None and "speedup_vs_full" not in oracle
    assert oracle["modelled_speedup"] > 1 and oracle["mean_exit_layer"] < tiny_llama.num_layers
    assert rows["full"]["modelled_speedup"] == pytest.approx(1.0, abs=1e-3)
    assert rows["fixed:4"]["modelled_speedup"] == pytest.approx(engine.cost.full_units / engine.cost.units(4, 1),
                                                                abs=1e-3)
    share = oracle_share(rows["fixed:4"]["modelled_speedup"], oracle["modelled_speedup"])
    assert rows["fixed:4"]["oracle_saving_share"] == pytest.approx(share, abs=1e-3)
    assert oracle["tokens"] == rows["full"]["tokens"]
    assert result["cost_model"]["exit_head_units"] == pytest.approx(engine.cost.exit_head_units, abs=1e-3)
