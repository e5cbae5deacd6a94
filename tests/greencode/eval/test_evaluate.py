"""`greencode eval` on a tiny random model and a handful of real stdlib files (small and fast)."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest

from greencode.config import load_config
from greencode.decoding.engine import EarlyExitEngine
from greencode.errors import GreencodeError
from greencode.eval.samples import load_samples, read_corpus
from greencode.eval.run import run_eval
from greencode.model.weights import runnable_forms
from tests.cli import run_cli

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FILES = ("textwrap.py", "string.py", "bisect.py", "heapq.py", "colorsys.py", "fnmatch.py", "glob.py",
         "shlex.py", "keyword.py", "copy.py", "numbers.py", "sched.py")
REQUIRED = {"policy", "rougeL", "bleu", "codebleu", "ngram_match", "weighted_ngram_match", "syntax_match",
            "dataflow_match", "exact_match", "edit_sim", "syntax_valid", "mean_exit_layer", "layers_skipped_frac",
            "seconds_per_completion", "tokens_per_s", "joules", "energy_source"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for name in FILES:
        shutil.copy(STDLIB / name, root / name)
    return root


def _config(corpus: Path, out: Path, samples: int = 2, policies=("full", "fixed:4"), thresholds=(), **extra):
    overrides = {"model.spec": "tiny-random-llama", "model.device": "cpu", "data.corpus": str(corpus),
                 "data.test_fraction": 0.5, "eval.samples": samples, "eval.policies": list(policies),
                 "eval.thresholds": list(thresholds), "eval.max_context_tokens": 48, "eval.max_new_tokens": 5,
                 "eval.out": str(out), "energy.source": "estimate", "agent.output": str(out / "no-agent"),
                 "model.weights": "fp32"}  # compared below with an engine on the fp32 tiny model
    overrides.update(extra)
    return load_config(overrides=overrides)


def _quiet(config, **kwargs):
    lines: list[str] = []
    result = run_eval(config, progress=False, echo=lines.append, **kwargs)
    return result, lines


def test_policies_share_samples_and_report_every_key(corpus, tmp_path, tiny_llama):
    config = _config(corpus, tmp_path, policies=("full", "fixed:4", "confidence:0"))
    result, lines = _quiet(config)
    rows = {row["policy"]: row for row in result["rows"]}
    assert list(rows) == ["full", "fixed:4", "confidence:0"]
    for row in rows.values():
        assert REQUIRED <= set(row), REQUIRED - set(row)
        assert row["samples"] == 2 and row["energy_source"] == "estimate"
        assert 0 <= row["rougeL"] <= 1 and 0 <= row["edit_sim"] <= 100
    # 5 tokens per completion: the first comes from the prefill at full depth (12), the rest exit at 4.
    assert rows["full"]["mean_exit_layer"] == 12 and rows["full"]["layers_skipped_frac"] == 0
    assert rows["fixed:4"]["mean_exit_layer"] == pytest.approx((12 + 4 * 4) / 5)
    assert rows["fixed:4"]["layers_skipped_frac"] == pytest.approx(1 - (12 + 4 * 4) / 60)
    # confidence:0 exits at the first exit point, like fixed:4, and produces the same tokens.
    assert rows["confidence:0"]["mean_exit_layer"] == rows["fixed:4"]["mean_exit_layer"]
    assert rows["confidence:0"]["exit_decisions_per_token"] == 1.0
    assert rows["full"]["decode_joules_vs_full"] == 1.0
    records = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    by_policy = {}
    for record in records:
        by_policy.setdefault(record["policy"], {})[record["key"]] = record["prediction"]
    assert set(by_policy["full"]) == set(by_policy["fixed:4"]) == set(by_policy["confidence:0"])  # same samples
    assert by_policy["fixed:4"] == by_policy["confidence:0"]
    # One prefill per sample, charged to every policy; decoding from copies of its cache changes nothing.
    prefill_seconds: dict = {}
    for record in records:
        prefill_seconds.setdefault(record["key"], set()).add(record["prefill_seconds"])
    assert all(len(values) == 1 for values in prefill_seconds.values())
    engine = EarlyExitEngine(tiny_llama)
    for sample in load_samples(config, tiny_llama.tokenizer, read_corpus(config)).samples:
        assert engine.complete(sample.context_ids, max_new_tokens=5).text == by_policy["full"][sample.key]
    # The agent thresholds configured by default are skipped with one line when there is no agent.
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["rows"] == json.loads(json.dumps(result["rows"]))
    assert written["config"]["eval"]["samples"] == 2 and written["versions"]["codebleu"] == "0.7.0"
    markdown = (tmp_path / "results.md").read_text()
    assert "| policy | ROUGE-L |" in markdown and "| fixed:4 |" in markdown
    for name in ("quality.png", "efficiency.png", "tradeoff.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_agent_skips_agent_rows_with_one_line(corpus, tmp_path):
    result, lines = _quiet(_config(corpus, tmp_path, samples=1, policies=("full",), thresholds=(0.6, 0.9)))
    assert [row["policy"] for row in result["rows"]] == ["full"]
    skipped = [line for line in lines if "agent:0.6" in line]
    assert len(skipped) == 1 and "agent:0.9" in skipped[0] and "greencode train agent" in skipped[0]


def test_agent_thresholds_and_overhead(corpus, tmp_path, tiny_llama):
    from greencode.exits.agent import build_mlp, save_agent
    from greencode.exits.points import exit_points

    net = build_mlp(tiny_llama.hidden_size, [8, 8])
    agent = save_agent(tmp_path / "agent.safetensors", net.state_dict(), [8, 8], "tanh", tiny_llama.hidden_size,
                       exit_points(tiny_llama.num_layers), "tiny-random-llama")
    config = _config(corpus, tmp_path / "out", samples=1, policies=("full",), thresholds=(0.0, 1.0))
    result, _ = _quiet(config, agent=str(agent))
    rows = {row["policy"]: row for row in result["rows"]}
    assert list(rows) == ["full", "agent:0", "agent:1"]
    assert rows["agent:0"]["label"] == "GC(0)"
    assert rows["agent:0"]["mean_exit_layer"] == pytest.approx((12 + 4 * 4) / 5)  # P(exit) >= 0: first exit point
    assert rows["agent:1"]["mean_exit_layer"] <= 12
    for name in ("agent:0", "agent:1"):
        assert rows[name]["agent_decision_seconds"] > 0 and rows[name]["agent_overhead_frac"] > 0
    assert "agent_decision_seconds" not in rows["full"]


def test_a_stale_agent_in_the_default_place_is_skipped_but_a_named_one_is_an_error(corpus, tmp_path):
    from greencode.exits.agent import build_mlp, save_agent

    stale = save_agent(tmp_path / "agents" / "agent.safetensors", build_mlp(32, [4]).state_dict(), [4], "tanh", 32,
                       [4, 6, 10], "another model")
    config = _config(corpus, tmp_path / "out", samples=1, policies=("full",), thresholds=(0.9,),
                     **{"agent.output": str(tmp_path / "agents")})
    result, lines = _quiet(config)
    assert [row["policy"] for row in result["rows"]] == ["full"]
    assert any("skipped agent:0.9" in line and "hidden size 32" in line for line in lines)
    with pytest.raises(GreencodeError, match="hidden size 32"):
        _quiet(config, agent=str(stale))


def test_fine_tuned_directory_brings_its_base_model(corpus, tmp_path, tiny_llama):
    tuned = tmp_path / "tuned"
    tiny_llama.model.save_pretrained(tuned, safe_serialization=True)
    tiny_llama.tokenizer.save_pretrained(tuned)
    (tuned / "greencode.json").write_text(json.dumps({"base_model": "tiny-random-llama"}))
    config = _config(corpus, tmp_path / "out", samples=2, policies=("full",), **{"model.spec": str(tuned)})
    result, _ = _quiet(config)
    rows = {row["policy"]: row for row in result["rows"]}
    assert [r["label"] for r in result["rows"]] == ["base (full)", "fine-tuned (full)"]
    # Same weights here, so the same completions: the two ran on identical samples.
    assert rows["base"]["rougeL"] == rows["full"]["rougeL"] and rows["base"]["edit_sim"] == rows["full"]["edit_sim"]


def test_interrupted_run_resumes_and_more_samples_extend_it(corpus, tmp_path, monkeypatch):
    import greencode.eval.run as evaluate

    config = _config(corpus, tmp_path, samples=2)
    real, calls = evaluate._complete, []

    def interrupt_after_three(*args):
        calls.append(args)
        if len(calls) == 2 + 3 + 1:  # two warm-up completions and three stored ones, then interrupt
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(evaluate, "_complete", interrupt_after_three)
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_eval(config, progress=False, echo=lines.append)
    assert any(line.startswith("interrupted:") for line in lines)
    assert len((tmp_path / "completions.jsonl").read_text().splitlines()) == 3
    partial = json.loads((tmp_path / "results.json").read_text())  # rows over the one finished sample
    assert partial["interrupted"] is True and partial["samples"] == 1
    monkeypatch.setattr(evaluate, "_complete", real)

    before = (tmp_path / "completions.jsonl").read_text()
    result, lines = _quiet(config)
    assert any("resuming: 3 completions" in line for line in lines)
    assert result["samples"] == 2 and not result["interrupted"] and result["completions_reused"] == 3
    assert "3 completions reused from an earlier session" in (tmp_path / "results.md").read_text()
    after = (tmp_path / "completions.jsonl").read_text()
    assert after.startswith(before) and len(after.splitlines()) == 4  # only the missing one ran

    result, _ = _quiet(_config(corpus, tmp_path, samples=3))  # more samples: the first two are reused
    assert result["samples"] == 3
    assert (tmp_path / "completions.jsonl").read_text().startswith(after)
    assert len((tmp_path / "completions.jsonl").read_text().splitlines()) == 6


def test_other_settings_in_the_same_out_are_refused_unless_restarted(corpus, tmp_path):
    _quiet(_config(corpus, tmp_path, samples=1, policies=("full",)))
    other = _config(corpus, tmp_path, samples=1, policies=("full",), **{"eval.max_new_tokens": 4})
    with pytest.raises(GreencodeError, match="other settings .*max_new_tokens.*--restart"):
        _quiet(other)
    result, _ = _quiet(other, restart=True)
    assert result["samples"] == 1


@pytest.mark.skipif("fp16" not in runnable_forms("cpu"), reason="this torch build has no fbgemm")
def test_completions_of_another_weight_form_are_not_reused(corpus, tmp_path):
    _quiet(_config(corpus, tmp_path, samples=1, policies=("full",), **{"model.weights": "fp32"}))
    with pytest.raises(GreencodeError, match="other settings .*weights"):
        _quiet(_config(corpus, tmp_path, samples=1, policies=("full",), **{"model.weights": "fp16"}))


def test_fewer_samples_than_asked_says_so_and_uses_them(corpus, tmp_path):
    result, lines = _quiet(_config(corpus, tmp_path, samples=50, policies=("full",), **{"data.max_files": 5}))
    assert 0 < result["samples"] < 50
    assert any("asked for 50 samples" in line and f"using {result['samples']}" in line for line in lines)


def test_codexglue_line_protocol(tmp_path):
    rows = [{"input": "<s> def add ( a , b ) : <EOL> return", "gt": "a + b"},
            {"input": "<s> import os <EOL> path = os . path . join (", "gt": "base , <STR_LIT:data> )"}]
    corpus = tmp_path / "test_python.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result, _ = _quiet(_config(corpus, tmp_path / "out", samples=5, policies=("full",)))
    assert result["protocol"] == "line" and result["samples"] == 2
    records = [json.loads(line) for line in (tmp_path / "out" / "completions.jsonl").read_text().splitlines()]
    assert all("\n" not in r["prediction"].strip() for r in records)  # stopped at the end of the line
    assert {r["key"] for r in records} == {"line 1", "line 2"}


def _cli(*args):
    return run_cli("eval", *args)


@pytest.mark.parametrize("corpus,message", [
    ("/nonexistent/code", "does not exist"),
    ("EMPTY", "has no usable"),
])
def test_bad_corpus_is_one_clear_line(tmp_path, corpus, message):
    if corpus == "EMPTY":
        (tmp_path / "empty").mkdir()
        corpus = str(tmp_path / "empty")
    done = _cli("--model", "tiny-random-llama", "--corpus", corpus, "--out", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("greencode: error:") and message in lines[0]


def test_cli_runs_and_prints_the_table(corpus, tmp_path):
    done = _cli("--model", "tiny-random-gpt2", "--corpus", str(corpus), "--samples", "1", "--policies",
                "full,fixed:6", "--thresholds", "", "--out", str(tmp_path), "--quiet",
                "--data.test_fraction", "0.5", "--eval.max_context_tokens", "32", "--eval.max_new_tokens", "3")
    assert done.returncode == 0, done.stderr
    assert "| full |" in done.stdout and "| fixed:6 |" in done.stdout
    assert (tmp_path / "tradeoff.png").is_file()
