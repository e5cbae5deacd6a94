"""Fill-in-the-middle: prompts built by hand exactly as llm-ls builds them (prefix marker + text before the
cursor + suffix marker + text after + middle marker, from llm-vscode's templates), the stop rule, and a
model whose tokenizer has FIM tokens."""

from __future__ import annotations

import pytest

from greencode.errors import GreencodeError
from greencode.decoding.fim import (SuffixStop, describe_fim, fim_prompt_ids, model_fim_form, plan_completion, split_fim,
                           stream_safe_length)

BEFORE = "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    "
AFTER = "\n    return total / len(xs)\n"

# llm-ls: format!("{prefix}{before}{suffix}{after}{middle}") with each template's three strings
LLM_LS_PROMPTS = {
    "starcoder": "<fim_prefix>" + BEFORE + "<fim_suffix>" + AFTER + "<fim_middle>",
    "santacoder": "<fim-prefix>" + BEFORE + "<fim-suffix>" + AFTER + "<fim-middle>",
    "codellama": "<PRE> " + BEFORE + " <SUF>" + AFTER + " <MID>",
    "deepseek": "<｜fim▁begin｜>" + BEFORE + "<｜fim▁hole｜>" + AFTER + "<｜fim▁end｜>",
    "qwen": "<|fim_prefix|>" + BEFORE + "<|fim_suffix|>" + AFTER + "<|fim_middle|>",
}


@pytest.mark.parametrize("form", sorted(LLM_LS_PROMPTS))
def test_each_form_splits_into_the_text_before_and_after_the_cursor(form):
    parts = split_fim(LLM_LS_PROMPTS[form])
    assert (parts.prefix, parts.suffix, parts.source) == (BEFORE, AFTER, form)


def test_plain_prompts_and_the_suffix_field():
    assert split_fim("x = 1\n") == split_fim("x = 1\n", None)
    assert split_fim("x = 1\n").source == "" and split_fim("x = 1\n").suffix == ""
    assert split_fim(BEFORE, AFTER).source == "suffix"


@pytest.mark.parametrize("prompt, message", [
    ("<fim_suffix>a<fim_prefix>b<fim_middle>", "wrong order"),
    ("<fim_prefix>a<fim_middle>b<fim_suffix>", "wrong order"),
    ("<|fim_middle|>a<|fim_prefix|>b<|fim_suffix|>", "wrong order"),
    ("<fim_prefix>a<fim_middle>", "0 <fim_suffix> markers"),
    ("<fim_prefix>a<fim_prefix>b<fim_suffix>c<fim_middle>", "2 <fim_prefix> markers"),
    ("<fim_prefix>a<fim_suffix>b<fim_middle>c = 1", "text after <fim_middle>"),
    ("<PRE> a <|fim_suffix|>b", "mixes FIM forms"),
])
def test_bad_fim_prompts_say_what_is_wrong(prompt, message):
    with pytest.raises(GreencodeError, match=message):
        split_fim(prompt)


def test_a_fim_prompt_and_a_suffix_field_together_is_ambiguous():
    with pytest.raises(GreencodeError, match="one way only"):
        split_fim(LLM_LS_PROMPTS["starcoder"], "\nmore")


def test_stop_before_the_line_that_repeats_the_suffix():
    rule = SuffixStop(BEFORE, AFTER)
    done = "count = len(xs)\n    return total / len(xs)\n"
    assert done[:rule.cut(done)] == "count = len(xs)"  # the suffix brings its own newline
    assert rule.cut("count = 1\n    ret") is None  # not yet known ...
    assert rule.cut("count = 1\n    ret", finished=True) == len("count = 1")  # ... but it ended repeating
    assert rule.cut("count = 1\n    print(count)") is None


def test_stop_at_a_line_that_closes_the_enclosing_block():
    rule = SuffixStop(BEFORE, AFTER)
    text = "count = 1\ndef other():\n"
    assert text[:rule.cut(text)] == "count = 1"
    at_top = SuffixStop("import os\n", "\nprint(1)\n")  # the cursor's line has no indentation: nothing closes
    assert at_top.cut("x = 1\ny = 2\n") is None


def test_suffix_on_the_cursors_line_and_at_a_line_start():
    call = SuffixStop("print(max(", ")\nx = 1\n")
    assert call.cut("a, b)\n") == len("a, b") and call.cut("a, b") is None and call.visible("a, b") == 0
    line_start = SuffixStop("def f():\n", "    return 1\n")
    text = "    y = 2\n    return 1\n"
    assert text[:line_start.cut(text)] == "    y = 2\n"  # the suffix starts its own line


def test_streaming_never_shows_what_a_cut_removes():
    rule = SuffixStop(BEFORE, AFTER)
    final = "count = len(xs)\n    mean = total\n    return total / len(xs)\n"
    shown = 0
    for end in range(1, len(final) + 1):
        text = final[:end]
        safe = stream_safe_length(text, ["\n\n\n"], rule)
        shown = max(shown, safe)
        kept = rule.cut(text)
        assert kept is None or shown <= kept
        if kept is not None:
            break
    assert final[:shown] == "count = len(xs)\n    mean = total"
    assert stream_safe_length("a = 1\nb", ["\nbb", "zz"], None) == len("a = 1")
    assert stream_safe_length("a = 1\nbb = 2", ["\nbb"], None) == len("a = 1")


def _tokenizer_with(tokens: list[str]):
    from transformers import AutoTokenizer

    from greencode.model.load import default_model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir("")))
    tokenizer.add_special_tokens({"additional_special_tokens": tokens})
    return tokenizer


def test_the_default_tokenizer_has_no_fim_tokens_and_a_starcoder_one_does():
    from greencode.model.load import default_model_dir
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(str(default_model_dir("")))
    assert model_fim_form(plain) is None and describe_fim(plain).startswith("prefix only")
    starcoder = _tokenizer_with(["<fim_prefix>", "<fim_suffix>", "<fim_middle>"])
    assert model_fim_form(starcoder).name == "starcoder" and describe_fim(starcoder).startswith("starcoder")
    qwen = _tokenizer_with(["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"])
    assert model_fim_form(qwen).name == "qwen"


def test_the_models_own_fim_prompt_fits_the_context_and_keeps_the_cursor():
    tokenizer = _tokenizer_with(["<fim_prefix>", "<fim_suffix>", "<fim_middle>"])
    form = model_fim_form(tokenizer)
    marks = tokenizer.convert_tokens_to_ids(["<fim_prefix>", "<fim_suffix>", "<fim_middle>"])
    ids = fim_prompt_ids(tokenizer, form, BEFORE, AFTER, 512)
    assert ids == tokenizer(LLM_LS_PROMPTS["starcoder"], add_special_tokens=False)["input_ids"]
    long_before, long_after = "x = 1\n" * 400, "y = 2\n" * 400
    short = fim_prompt_ids(tokenizer, form, long_before, long_after, 64)
    assert len(short) == 64 and short[0] == marks[0] and short[-1] == marks[2] and marks[1] in short
    assert tokenizer.decode(short[1:short.index(marks[1])]).endswith("x = 1\n")  # the text nearest the cursor
    plan = plan_completion(BEFORE, AFTER, tokenizer, form, 512)
    assert plan.mode == "model" and plan.prompt == ids and plan.stop == ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]
    prefix_only = plan_completion(LLM_LS_PROMPTS["qwen"], None, tokenizer, None, 512)
    assert prefix_only.mode == "prefix-only" and prefix_only.prompt == BEFORE and "no FIM tokens" in prefix_only.note


def test_greencode_info_says_which_fim_applies():
    from greencode.config import load_config
    from greencode.info import model_info

    facts = model_info(load_config(None, {"model.spec": "tiny-random-llama"}))
    assert facts["fim"].startswith("prefix only: the model has no FIM tokens")
