"""Prefix reuse between prompts: the same tokens, logits and exit layers as a fresh prefill, bounded,
per model, and never corrupted by early-exit decoding of another request."""

from __future__ import annotations

import pytest
import torch

from greencode.config import load_config
from greencode.decoding.engine import EarlyExitEngine
from greencode.decoding.prefix_cache import PrefixCache, common_prefix_length, prefix_cache_for, window_cut
from greencode.decoding.window import text_window

FILE = ("import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        return handle.read().splitlines()"
        "\n\n\ndef main():\n    for line in read_lines('setup.cfg'):\n        print(line.strip())\n")
TYPED = [FILE[:n] for n in (60, 64, 71, 75, 90, len(FILE))]  # an editor's prompts while the user types


@pytest.mark.parametrize("policy", ["fixed:4", "confidence:0.001", "full"])
def test_reuse_gives_the_fresh_prefill_tokens_and_exit_layers(tiny_model, policy):
    fresh = EarlyExitEngine(tiny_model)
    cached = EarlyExitEngine(tiny_model, prefix_cache=PrefixCache(4))
    for prompt in TYPED:
        expected = fresh.complete(prompt, policy, max_new_tokens=6)
        got = cached.complete(prompt, policy, max_new_tokens=6)
        assert [e.token_id for e in got.events] == [e.token_id for e in expected.events]
        assert got.exit_layers == expected.exit_layers
    reused = cached.prefill(TYPED[-1] + "x = 1\n")
    assert reused.reused >= len(cached.encode(TYPED[-1], 15)[0]) - 2  # only the new tokens ran
    assert torch.allclose(reused.logits, fresh.prefill(TYPED[-1] + "x = 1\n").logits, atol=1e-4)
    assert cached.prefix_cache.hits >= len(TYPED) - 1


def test_early_exit_decoding_never_writes_into_a_cached_prefix(tiny_llama):
    cache = PrefixCache(4)
    engine = EarlyExitEngine(tiny_llama, prefix_cache=cache)
    engine.complete(TYPED[0], "fixed:4", max_new_tokens=8)  # exits at 4: propagation fills layers 5..L of its cache
    (entry,) = cache._entries.values()
    reference = EarlyExitEngine(tiny_llama).prefill(TYPED[0]).cache
    assert entry.layers[0][0].shape[-2] == len(entry.ids)  # no decoded token was appended to the entry
    for (keys, values), layer in zip(entry.layers, reference.layers):
        assert torch.equal(keys, layer.keys) and torch.equal(values, layer.values)
    full = EarlyExitEngine(tiny_llama)
    again = EarlyExitEngine(tiny_llama, prefix_cache=cache)  # another engine on the same model shares it
    assert again.prefill(TYPED[1]).reused > 0
    assert torch.allclose(again.prefill(TYPED[1]).logits, full.prefill(TYPED[1]).logits, atol=1e-4)


def test_cached_state_never_crosses_models():
    from tests.conftest import _load

    cache = PrefixCache(8)
    llama = EarlyExitEngine(_load("tiny-random-llama"), prefix_cache=cache)
    opt = EarlyExitEngine(_load("tiny-random-opt"), prefix_cache=cache)
    llama.prefill(TYPED[0])
    assert opt.prefill(TYPED[0] + " ").reused == 0  # same tokens, other model: nothing reused
    assert llama.prefill(TYPED[0] + " ").reused > 0


def test_bounded_by_entries_and_memory(tiny_llama):
    cache = PrefixCache(max_entries=2)
    engine = EarlyExitEngine(tiny_llama, prefix_cache=cache)
    for prompt in ("def a():", "class B:", "x = [1, 2]", "import sys"):
        engine.prefill(prompt)
    assert len(cache) == 2
    engine.prefill(TYPED[0])
    engine.prefill(TYPED[2])  # extends TYPED[0]: replaces it instead of taking a second slot
    assert len(cache) == 2 and max(len(e.ids) for e in cache._entries.values()) == len(engine.encode(TYPED[2], 15)[0])
    one = cache.nbytes // 2
    tight = PrefixCache(max_entries=8, max_bytes=one + 1)
    engine = EarlyExitEngine(tiny_llama, prefix_cache=tight)
    for prompt in ("def a():", "class B:", "x = [1, 2]"):
        engine.prefill(prompt)
    assert tight.nbytes <= one + 1 and len(tight) >= 1


def test_config_turns_it_on_and_off():
    assert prefix_cache_for(load_config(None).engine).max_entries == 4
    assert prefix_cache_for(load_config(None, {"engine.prefix_cache": 0}).engine) is None
    assert prefix_cache_for(load_config(None, {"engine.prefix_cache_mb": 0}).engine) is None
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2 and common_prefix_length([], [1]) == 0


def test_a_long_prompts_window_moves_in_steps_so_typing_still_reuses_it(tiny_llama):
    assert window_cut(100, 200) == 0 and window_cut(201, 200) == 50 and window_cut(250, 200) == 50
    assert window_cut(251, 200) == 100 and window_cut(10_000, 512) % 64 == 0 and 10_000 - window_cut(10_000, 512) <= 512
    long_file = FILE * 4  # well past the 60-token window below
    cached = EarlyExitEngine(tiny_llama, max_context_tokens=60, prefix_cache=PrefixCache(4))
    plain = EarlyExitEngine(tiny_llama, max_context_tokens=60)
    cached.prefill(long_file + "fo")
    typed = cached.prefill(long_file + "for x")
    assert typed.dropped % 15 == 0 and len(typed.ids) <= 60 and typed.reused >= len(typed.ids) - 4
    total = len(tiny_llama.tokenizer(long_file + "for x", add_special_tokens=False)["input_ids"])
    assert plain.encode(long_file + "for x", 15)[1] == total - 60  # without a cache: exactly the last 60 tokens


def test_a_text_window_starts_at_a_line_that_stays_put_while_the_user_types():
    text = "".join(f"line {i} = {i}\n" for i in range(100))
    window = text_window(text, 300)
    assert 300 - 300 // 8 - 14 <= len(window) <= 300 and window.startswith("line ") and text.endswith(window)
    for typed in ("x", "x = 1", "x = 12345"):
        assert text_window(text + typed, 300).startswith(window[:20])  # same start: the cached prefix matches
    assert text_window("short", 300) == "short"
    no_lines = text_window("y" * 500, 300)
    assert len(no_lines) <= 300 and text_window("y" * 500 + "z", 300) == no_lines + "z"  # no line: the grid alone
