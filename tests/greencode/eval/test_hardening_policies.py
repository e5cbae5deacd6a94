"""Hardening (#26) of `greencode eval` and `greencode bench`: no policy, only the oracle, an --out that
cannot be written, no prompts and an empty model spec are one line each, before any model loads."""

from __future__ import annotations


import pytest

from tests.cli import run_cli
from tests.folders import unwritable

EVAL = ["eval", "--model", "tiny-random-llama", "--samples", "2", "--thresholds", "", "--quiet"]
BENCH = ["bench", "--model", "tiny-random-llama", "--prompts", "1", "--no-llama-cpp"]


def _one_line(ran, message: str) -> None:
    assert ran.returncode == 2, ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("greencode: error: ") and message in lines[0], ran.stderr


@pytest.mark.parametrize("command, policies, message", [
    (EVAL, "", "--policies names no policy; give at least one, e.g. --policies full,fixed:14"),
    (EVAL, ",,", "--policies names no policy"),
    (EVAL, "oracle", "--policies oracle alone measures nothing: the oracle is modelled from a full-depth run; add a "
                     "measured policy, e.g. --policies full,oracle"),
    (BENCH, "", "--policies names no policy"),
    (BENCH, " , ", "--policies names no policy"),
    (BENCH, "oracle", "--policies oracle alone measures nothing"),
])
def test_nothing_to_measure_is_one_line(tmp_path, command, policies, message):
    _one_line(run_cli(*command, "--policies", policies, "--out" if command is EVAL else "--json",
                      *([tmp_path / "out"] if command is EVAL else [])), message)
    assert not (tmp_path / "out").exists()


def test_an_unwritable_eval_out_is_one_line(tmp_path):
    with unwritable(tmp_path / "locked") as locked:
        for out, what in ((locked, "is not writable"), (locked / "run", "cannot be created")):
            _one_line(run_cli(*EVAL, "--policies", "full", "--out", out), f"{out}: {what}")


def test_bench_with_no_prompts_says_so(tmp_path):
    _one_line(run_cli("bench", "--model", "tiny-random-llama", "--prompts", "0"), "--prompts 0: give at least 1")


def test_an_empty_model_spec_says_so(tmp_path):
    code = tmp_path / "a.py"
    code.write_text("def f():\n    return")
    _one_line(run_cli("complete", code, "--model", ""), "the model spec is empty; give default, a model directory")
