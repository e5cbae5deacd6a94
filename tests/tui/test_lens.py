"""The playground as a lens: inspector, sweep, compare's oracle marks, partial accept, indentation, go to line.
Fake engine for the UI, and a real tiny model where the numbers must be the engine's own."""

from __future__ import annotations

import threading

import pytest

from greencode.decoding.engine import EarlyExitEngine
from greencode.exits.oracle import first_agreeing_exit
from tests.conftest import _load
from tests.tui.fake_engine import ORACLE, FakeEngine
from tests.tui.helpers import loaded, make_app, wait_for
from tui.app import GreencodeApp
from tui.editor import CodeEditor
from tui.goto import GotoLineScreen
from tui.inspector import InspectorScreen, format_score
from tui.screens import CompareScreen
from tui.settings import TuiSettings
from tui.sweep import SweepScreen
from greencode.files.source import open_source

pytestmark = pytest.mark.asyncio
SIZE = (120, 40)
CODE = "def read_lines(path):\n    with open(path) as handle:\n        return [line.rstrip() for line in"


def tiny_engine():
    return EarlyExitEngine(_load("tiny-random-llama"))


def notified(app, words: str) -> bool:
    return any(words in str(n.message) for n in app._notifications)


async def finished(pilot, app) -> None:
    await wait_for(pilot, lambda: app.live is not None and app.live.summary is not None, what="the completion")


async def complete(pilot, app, engine=None) -> None:
    await loaded(pilot)
    await pilot.press("f5")
    if isinstance(engine, FakeEngine) and engine.gated:
        engine.release(50)
    await finished(pilot, app)


# -- inspector -------------------------------------------------------------------------------------

async def test_inspector_shows_the_recorded_scores_and_the_explained_candidates(tmp_path):
    app, engine, _ = make_app(tmp_path, mode="block")
    async with app.run_test(size=SIZE) as pilot:
        await complete(pilot, app)
        await pilot.press("f6")
        screen = app.screen
        assert isinstance(screen, InspectorScreen)
        assert screen.selected == 0
        for index in (0, 1, 2):
            event = app.live.events[index]
            await wait_for(pilot, lambda: index in screen.explanations, what=f"token {index} explained")
            await pilot.pause()
            scores = [row[1] for row in screen.rows[:len(event.exit_scores)]]
            assert scores == [format_score(s) for s in event.exit_scores]  # the engine's own numbers
            assert [row[0] for row in screen.rows] == [*map(str, engine.exit_points), "full"]
            exit_row = next(row for row in screen.rows if "exit" in row[3])
            assert exit_row[0] == str(event.exit_layer) or (exit_row[0] == "full" and event.exit_layer == 30)
            oracle_row = next(row for row in screen.rows if "oracle" in row[3])
            assert oracle_row[0] == str(ORACLE[index]) or (oracle_row[0] == "full" and ORACLE[index] == 30)
            await pilot.press("right")
        assert screen.selected == 3 and engine.explained[:3] == [0, 1, 2]
        await pilot.press("f6")
        assert not isinstance(app.screen, InspectorScreen)


async def test_inspector_on_a_real_model_matches_what_the_engine_recorded(tmp_path):
    tiny_engine()  # loaded before the app starts (the first load takes seconds)
    app, _, _ = make_app(tmp_path, engine=None, text=CODE, policy_kind="confidence", threshold=0.005, mode="block",
                         block_tokens=6)
    app._engine_factory = tiny_engine
    async with app.run_test(size=SIZE) as pilot:
        await complete(pilot, app)
        events = app.live.events
        early = next(e for e in events if e.exit_layer < e.num_layers)
        await pilot.press("f6")
        screen = app.screen
        assert screen.selected == early.index  # opens on the first token that left early
        await wait_for(pilot, lambda: early.index in screen.explanations, timeout=60, what="the replay")
        await pilot.pause()
        assert [row[1] for row in screen.rows[:len(early.exit_scores)]] == [format_score(s) for s in early.exit_scores]
        explained = screen.explanations[early.index]
        at_exit = next(x for x in explained.exits if x.layer == early.exit_layer)
        assert at_exit.candidates[0].token_id == early.token_id
        # confidence's recorded score is the max probability the replay finds at each exit point passed
        assert [x.candidates[0].probability for x in explained.exits[:len(early.exit_scores)]] == pytest.approx(
            list(early.exit_scores), abs=1e-5)


async def test_inspector_bad_input_is_one_line(tmp_path):
    gate = threading.Event()
    engine = FakeEngine()
    app, _, _ = make_app(tmp_path, engine)
    app._engine_factory = lambda: (gate.wait(120), engine)[1]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f6", "f7")  # before the model is there
        assert notified(app, "still loading") and not isinstance(app.screen, (InspectorScreen, SweepScreen))
        gate.set()
        await loaded(pilot)
        await pilot.press("f6")  # no completion yet
        assert notified(app, "no completion to inspect") and not isinstance(app.screen, InspectorScreen)


async def test_a_click_on_a_ghost_token_inspects_it(tmp_path):
    app, _, _ = make_app(tmp_path, mode="block")
    async with app.run_test(size=SIZE) as pilot:
        await complete(pilot, app)
        editor = app.query_one(CodeEditor)
        cursor = editor.cursor_screen_offset
        offset = cursor - editor.region.offset
        await pilot.click(CodeEditor, offset=(offset.x + len("print("), offset.y))  # on "fib"
        await pilot.pause()
        assert isinstance(app.screen, InspectorScreen) and app.screen.selected == 2


# -- compare: oracle marks -------------------------------------------------------------------------

async def test_oracle_marks_match_a_recorded_full_depth_run(tmp_path):
    tiny_engine()
    app, _, _ = make_app(tmp_path, text=CODE, policy_kind="confidence", threshold=0.005, mode="block",
                         block_tokens=5)
    app._engine_factory = tiny_engine
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("f4")
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await wait_for(pilot, lambda: screen.oracle_layers, timeout=60, what="the oracle marks")
        engine = app.engine
        recorded = engine.complete(CODE, max_new_tokens=5, record=True)
        expected = [first_agreeing_exit(e.trace.exit_top1, e.trace.final_top1, engine.exit_points, engine.num_layers)
                    for e in recorded.events]
        assert screen.oracle_layers == expected
        marks = str(screen.query_one("#compare-oracle").render())
        assert "oracle" in marks and "J (modelled)" in marks


# -- sweep -----------------------------------------------------------------------------------------

async def test_sweep_on_a_real_model_says_identical_where_texts_are_equal_and_a_row_sets_the_knob(tmp_path):
    tiny_engine()
    app, _, _ = make_app(tmp_path, text=CODE, policy_kind="confidence", threshold=0.006, mode="block",
                         block_tokens=5)
    app._engine_factory = tiny_engine
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("f7")
        screen = app.screen
        assert isinstance(screen, SweepScreen) and len(screen.thresholds) == 5
        await wait_for(pilot, lambda: screen.finished, timeout=120, what="the sweep")
        rows = screen.rows
        assert [r.threshold for r in rows] == [None, *screen.thresholds]
        full = rows[0]
        assert full.identical_to_full and full.mean_exit_layer == 12
        for row in rows:
            assert row.identical_to_full == (row.text == full.text)
            assert (row.first_difference == "") == (row.token_ids == full.token_ids)
        assert any(r.mean_exit_layer < 12 for r in rows[1:])
        await pilot.press("down", "down", "enter")  # the second threshold
        await pilot.pause()
        assert not isinstance(app.screen, SweepScreen)
        assert app.threshold == screen.thresholds[1] and app.policy == f"confidence:{screen.thresholds[1]:g}"


async def test_sweep_refuses_an_empty_prompt_and_stops_a_streaming_completion(tmp_path):
    engine = FakeEngine(gated=True)
    app, _, _ = make_app(tmp_path, engine, text="")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("f7")
        assert notified(app, "nothing before the cursor") and not isinstance(app.screen, SweepScreen)
        await pilot.press("x", "f5")
        engine.release(1)
        await wait_for(pilot, lambda: app.live is not None and app.live.events, what="a streaming token")
        await pilot.press("f7")
        assert notified(app, "stopped the streaming completion") and isinstance(app.screen, SweepScreen)
        engine.release(200)
        await wait_for(pilot, lambda: app.screen.finished if isinstance(app.screen, SweepScreen) else True,
                       what="the sweep")
        assert [r.identical_to_full for r in app.screen.rows] == [True] * 6  # the fake's text never changes


async def test_read_only_file_gets_inspector_and_sweep_and_is_never_written(tmp_path):
    path = tmp_path / "latin1.py"
    original = "x = 'caf\xe9'\ny = x +".encode("latin-1")
    path.write_bytes(original)
    engine = FakeEngine()
    app = GreencodeApp(open_source(path), TuiSettings(idle_ms=0), lambda: engine)
    async with app.run_test(size=SIZE) as pilot:
        await complete(pilot, app)
        await pilot.press("tab")  # nothing is inserted in a read-only buffer
        assert "print" not in app.query_one(CodeEditor).text
        await pilot.press("f6")
        assert isinstance(app.screen, InspectorScreen)
        await pilot.press("escape", "f7")
        await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen) and app.screen.finished, what="the sweep")
        await pilot.press("escape", "ctrl+s")
    assert path.read_bytes() == original


# -- editing comfort -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, typed, expected", [
    ("a.py", ["d", "e", "f", "space", "f", "(", ")", ":", "enter", "x"], "def f():\n    x"),
    ("a.py", ["space", "space", "space", "space", "y", "enter", "z"], "    y\n    z"),
    ("A.java", ["c", "space", "{", "enter", "x", ";", "enter", "}"], "c {\n    x;\n}"),
])
async def test_enter_keeps_indentation_and_opens_blocks_and_brace_dedents(tmp_path, name, typed, expected):
    app, _, _ = make_app(tmp_path, text="", name=name)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*typed)
        assert app.query_one(CodeEditor).text == expected


async def test_word_and_line_accept_insert_part_and_keep_the_rest(tmp_path):
    app, _, _ = make_app(tmp_path, mode="block")
    async with app.run_test(size=SIZE) as pilot:
        editor = app.query_one(CodeEditor)
        before = editor.text
        await complete(pilot, app)
        await pilot.press("ctrl+right")
        assert editor.text == before + "print" and editor.ghost_text.startswith("(fibonacci(10))")
        await pilot.press("ctrl+right")
        assert editor.text == before + "print(" and editor.ghost_text.startswith("fibonacci")
        await pilot.press("ctrl+l")
        assert editor.text == before + "print(fibonacci(10))\n"
        assert editor.ghost_text.startswith("    return") and app.live is not None  # the rest still shown
        await pilot.press("tab")
        assert editor.text.startswith(before + "print(fibonacci(10))\n    return")


async def test_ctrl_g_goes_to_a_line(tmp_path):
    app, _, _ = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+g")
        assert isinstance(app.screen, GotoLineScreen)
        await pilot.press("2", "enter")
        assert app.query_one(CodeEditor).cursor_location == (1, 0)


async def test_enter_that_widens_the_gutter_keeps_the_editor_alive(tmp_path):
    # 9 -> 10 lines widens the line-number gutter: TextArea then skips its per-edit wrap (it crashed here)
    app, _, _ = make_app(tmp_path, text="".join(f"x{i} = {i}\n" for i in range(8)) + "y")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "z")
        editor = app.query_one(CodeEditor)
        assert editor.document.line_count == 10 and editor.text.endswith("y\nz")


async def test_arrows_held_down_replay_only_the_token_they_stop_on(tmp_path):
    app, engine, _ = make_app(tmp_path, mode="block")
    engine.explain_gate = threading.Event()  # the first replay is slow: the arrows pile up behind it
    async with app.run_test(size=SIZE) as pilot:
        await complete(pilot, app)
        await pilot.press("f6")
        await wait_for(pilot, lambda: engine.explained == [0], what="the first replay")
        await pilot.press(*["right"] * 8)
        screen = app.screen
        await wait_for(pilot, lambda: screen.selected == 8, what="the arrows")
        engine.explain_gate.set()
        await wait_for(pilot, lambda: 8 in screen.explanations, what="token 9 explained")
        assert engine.explained == [0, 8]  # not one replay per key press
