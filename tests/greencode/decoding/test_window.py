"""Hardening (#26): one bound on how much of a file or prompt is tokenized, the window around the cursor in
characters (greencode/decoding/window.py), shared by `complete`, the TUI and `serve`."""

from __future__ import annotations

import re

from greencode.decoding.window import MAX_CONTEXT_CHARS, MAX_SUFFIX_CHARS, cursor_window, suffix_window
from tests.cli import run_cli


def test_the_window_keeps_the_text_nearest_the_cursor():
    before, after = "a = 1\n" * 10_000, "b = 2\n" * 10_000
    near_before, near_after = cursor_window(before, after)
    assert len(near_before) <= MAX_CONTEXT_CHARS and before.endswith(near_before) and near_before.startswith("a")
    assert len(near_after) <= MAX_SUFFIX_CHARS and after.startswith(near_after) and near_after.endswith("2")
    assert cursor_window("short", "tail") == ("short", "tail")
    assert suffix_window("x" * 10, 4) == "xxxx"  # no line end: cut at the bound


def test_complete_on_a_huge_file_tokenizes_only_the_window(tmp_path):
    big = tmp_path / "big.py"
    big.write_text("x = 1\n" * 350_000)  # 2.1 MB: whole, some 1.4 million tokens
    ran = run_cli("complete", big, "--model", "tiny-random-llama", "--policy", "full", "--max-new-tokens", "2")
    assert ran.returncode == 0, ran.stderr
    dropped = int(re.search(r"(\d+) context tokens dropped", ran.stdout).group(1))
    assert 0 < dropped < MAX_CONTEXT_CHARS  # only what the window held past the engine's token limit
