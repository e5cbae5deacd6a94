"""Hardening (#26) of the playground, driven through Pilot: a file with long lines opens unscrolled, the
inspector compares a healed token with full depth under the same constraint, closing the compare view
keeps the completion underneath, and Enter after a statement that ends a Python block dedents."""

from __future__ import annotations

import pytest

from greencode.decoding.engine import EarlyExitEngine
from tests.conftest import _load
from tests.tui.helpers import completed, loaded, make_app, wait_for
from tui.editor import CodeEditor
from tui.inspector import InspectorScreen
from tui.screens import CompareScreen

pytestmark = pytest.mark.asyncio
SIZE = (110, 36)


def _screen_line(editor: CodeEditor, row: int) -> str:
    return "".join(segment.text for segment in editor.render_line(row - editor.scroll_offset.y))


@pytest.mark.parametrize("last", ["x = 1", "z = '" + "z" * 100 + "'"])
async def test_a_file_with_long_lines_opens_showing_the_cursor_from_the_left(tmp_path, last):
    body = "".join(f"class _CollectErrors:\n    value = '{'v' * 150}'\n\n" for _ in range(40))
    app, _, _ = make_app(tmp_path, text=body + last + "\n", name="big.py")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        editor = app.query_one(CodeEditor)
        row, column = editor.cursor_location
        assert (row, column) == (120, len(last))
        width = editor.scrollable_content_region.width - editor.gutter_width
        if column + 3 < width:  # the cursor fits from the left edge: no scrolling sideways
            assert editor.scroll_offset.x == 0
            assert "class _CollectErrors:" in _screen_line(editor, row - 3)
        else:  # it does not: scrolled just far enough to show it
            assert 0 < editor.scroll_offset.x <= column and editor.scroll_offset.x + width >= column


def healing_engine():
    return EarlyExitEngine(_load("tiny-random-llama"), token_healing=True)


async def test_the_inspector_compares_a_healed_token_with_full_depth_under_the_same_constraint(tmp_path):
    engine = healing_engine()  # loaded before the app starts
    prompt = "import os\n\ndef main():\n    pri"  # the cursor inside a word: ' pri' is backed out and healed
    prefilled = engine.prefill(prompt, 6)
    assert prefilled.healed == " pri"
    unconstrained = int(prefilled.logits.argmax())
    app, _, _ = make_app(tmp_path, text=prompt, policy_kind="confidence", threshold=0.005, mode="block",
                         block_tokens=4)
    app._engine_factory = healing_engine
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("f5")
        await wait_for(pilot, lambda: app.live is not None and app.live.summary is not None, timeout=60,
                       what="the completion")
        first = app.live.events[0]
        assert first.token_id != unconstrained  # chosen under the constraint: not full depth's free top-1
        await pilot.press("f6")
        screen = app.screen
        assert isinstance(screen, InspectorScreen)
        while screen.selected > 0:
            await pilot.press("left")
        await wait_for(pilot, lambda: 0 in screen.explanations, timeout=60, what="the replay of token 1")
        await pilot.pause()
        explained = screen.explanations[0]
        assert explained.full_top1.token_id == first.token_id and explained.equals_full
        summary = str(screen.query_one("#inspector-summary").render())
        assert "equals full depth" in summary and "differs" not in summary


async def test_esc_that_closes_the_compare_view_keeps_the_completion_underneath(tmp_path):
    app, _, _ = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        editor = app.query_one(CodeEditor)
        await completed(pilot)
        shown = editor.ghost_text
        assert shown
        await pilot.press("f4")
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await wait_for(pilot, lambda: len(screen.summaries) == 2, what="both sides of the comparison")
        await pilot.press("escape")
        assert not isinstance(app.screen, CompareScreen)
        assert editor.ghost_text == shown and app.live is not None
        before = editor.text
        await pilot.press("tab")
        assert editor.text.endswith(shown) and len(editor.text) == len(before) + len(shown)


@pytest.mark.parametrize("line, expected", [
    ("    return x", ""), ("    pass", ""), ("    raise ValueError(x)", ""), ("        break", "    "),
    ("        continue  # next", "    "), ("\treturn", ""),
    ("    return_value = 1", "    "), ("    return (x,", "    "), ("    passed = True", "    "),
])
async def test_enter_after_a_statement_that_ends_a_block_dedents(tmp_path, line, expected):
    app, _, _ = make_app(tmp_path, text=f"def f(x):\n{line}", name="a.py")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "y")
        assert app.query_one(CodeEditor).text == f"def f(x):\n{line}\n{expected}y"
