"""Token healing: a prompt cut mid-word completes the word, and callers get only what follows the cursor."""

from __future__ import annotations


import pytest

from greencode.decoding.engine import EarlyExitEngine
from greencode.decoding.healing import HealingConstraint
from tests.cli import run_cli

JAVA = ("import java.io.IOException;\nimport java.util.Date;\n\nfinal class DateTypeAdapter extends TypeAdapter<Date> {\n"
        "  @Override\n  public Date read(JsonReader in) thr")
PYTHON = "import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        return [line.rstrip() for line in hand"


def test_constraint_allows_tokens_that_start_with_the_removed_text_or_begin_it():
    texts = ["", " thr", " throws", " th", "ows", " t", "x", " throw"]
    constraint = HealingConstraint(" thr", texts)
    assert constraint.allowed(len(texts)).tolist() == [False, True, True, True, False, True, False, True]
    constraint.advance(3)  # " th" gives back part of it: the next token must start with "r"
    assert constraint.remaining == "r"
    constraint.advance(6)  # a token that does not agree can only come from an unconstrained step: stop healing
    assert not constraint


def test_healed_completion_continues_the_cut_token_on_a_real_model(tiny_llama):
    engine = EarlyExitEngine(tiny_llama, token_healing=True)
    tokenizer = tiny_llama.tokenizer
    ids = tokenizer(PYTHON, add_special_tokens=False)["input_ids"]
    removed = tokenizer.decode(ids[-1:])
    summary = engine.complete(PYTHON, "fixed:4", max_new_tokens=6)
    first = tokenizer.decode([summary.events[0].token_id])
    assert first.startswith(removed) or removed.startswith(first)  # the constraint held on a random model too
    # What the caller gets is exactly what follows the cursor: prompt + text == the decoded healed sequence.
    assert tokenizer.decode(ids[:-1] + [e.token_id for e in summary.events]) == PYTHON + summary.text
    assert "".join(e.text for e in summary.events) == summary.text
    assert summary.prompt_tokens == len(ids) - 1


def test_healing_off_and_id_prompts_leave_the_prompt_as_it_is(tiny_llama):
    tokenizer = tiny_llama.tokenizer
    ids = tokenizer(PYTHON, add_special_tokens=False)["input_ids"]
    off = EarlyExitEngine(tiny_llama).complete(PYTHON, max_new_tokens=4)
    as_ids = EarlyExitEngine(tiny_llama, token_healing=True).complete(ids, max_new_tokens=4)
    assert off.prompt_tokens == as_ids.prompt_tokens == len(ids)
    assert [e.token_id for e in off.events] == [e.token_id for e in as_ids.events]


@pytest.mark.integration
@pytest.mark.parametrize("prompt, start", [(JAVA, "ows"), (PYTHON, "le")])
def test_identifiers_cut_mid_word_complete_the_word(default_model, prompt, start):
    healed = EarlyExitEngine(default_model, token_healing=True).complete(prompt, max_new_tokens=4)
    raw = EarlyExitEngine(default_model).complete(prompt, max_new_tokens=4)
    assert healed.text.startswith(start), healed.text
    assert not raw.text.startswith(start)  # what healing fixes: `thr` went on as `ice`, `hand` as `]`


@pytest.mark.integration
def test_complete_command_heals_and_the_config_key_turns_it_off(tmp_path):
    code = tmp_path / "DateTypeAdapter.java"
    code.write_text(JAVA + "\n  }\n}\n")
    line = JAVA.count("\n") + 1
    at = f"{line}:{len(JAVA.splitlines()[-1]) + 1}"
    base = ["complete", str(code), "--at", at, "--policy", "full", "--max-new-tokens", "3"]
    healed = run_cli(*base)
    raw = run_cli(*base, "--engine.token_healing", "false")
    assert healed.returncode == 0 and raw.returncode == 0, healed.stderr + raw.stderr
    assert healed.stdout.startswith("ows"), healed.stdout
    assert not raw.stdout.startswith("ows"), raw.stdout


@pytest.mark.parametrize("overrides, typed, healed", [({}, True, True), ({"engine.token_healing": False}, True, False),
                                                      ({}, False, False)])
def test_front_ends_that_take_typed_text_heal_as_the_config_says(tiny_llama, overrides, typed, healed):
    from greencode.config import load_config
    from greencode.runtime import engine_from_config

    engine = engine_from_config(load_config(None, overrides), tiny_llama, typed_text=typed)
    assert engine.token_healing is healed


def test_tokens_still_under_the_healing_constraint_run_at_full_depth(tiny_llama):
    """A wrong token while healing derails the word the user is typing: those tokens never exit early."""
    engine = EarlyExitEngine(tiny_llama, token_healing=True)
    summary = engine.complete("x = 1\nhand", "fixed:4", max_new_tokens=3)
    first = tiny_llama.tokenizer.decode([summary.events[0].token_id])
    assert "hand".startswith(first) and first != "hand"  # the prefill's token healed only part of " hand"
    assert summary.exit_layers == [12, 12, 4]  # the second token still heals: full depth; then the exit
    assert EarlyExitEngine(tiny_llama).complete("x = 1\nhand", "fixed:4", max_new_tokens=3).exit_layers == [12, 4, 4]
