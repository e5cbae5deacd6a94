"""The playground driven through Textual's Pilot with a deterministic fake engine."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from greencode.errors import GreencodeError
from tests.tui.fake_engine import FakeEngine
from tests.tui.helpers import EXAMPLE, completed, loaded, make_app, wait_for
from tui.editor import GHOST_META, CodeEditor
from tui.app import GreencodeApp
from tui.screens import CompareScreen, ConfirmQuitScreen, HelpScreen
from tui.settings import TuiSettings
from greencode.files.source import open_source

pytestmark = pytest.mark.asyncio
SIZE = (110, 36)


def ghost_cells(editor: CodeEditor) -> list[tuple[str, object]]:
    """(character, colour) of the ghost text as drawn on the cursor's screen line."""
    row = editor.cursor_location[0] - editor.scroll_offset.y
    cells = []
    for segment in editor.render_line(row):
        if segment.style is not None and segment.style.meta.get(GHOST_META):
            cells.extend((char, segment.style.color) for char in segment.text)
    return cells


async def test_tokens_stream_in_as_ghost_text_coloured_by_exit_layer(tmp_path):
    app, engine, _ = make_app(tmp_path, FakeEngine(gated=True))
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        editor = app.query_one(CodeEditor)
        await pilot.press("f5")
        engine.release(3)
        await wait_for(pilot, lambda: len(editor.ghost_spans) == 3, what="three tokens")
        # print exits at 4, ( at 8, fib at 12 of 30 layers: bands 0, 0, 1
        assert editor.ghost_spans == [("print", "band-0"), ("(", "band-0"), ("fib", "band-1")]
        green = editor.get_component_rich_style("band-0").color
        yellow_green = editor.get_component_rich_style("band-1").color
        assert green != yellow_green
        cells = ghost_cells(editor)
        assert "".join(char for char, _ in cells) == "print(fib"
        assert [colour for _, colour in cells] == [green] * 6 + [yellow_green] * 3
        assert app.live is not None and app.live.summary is None  # still streaming
        engine.release(20)
        await wait_for(pilot, lambda: app.live.summary is not None, what="the end of the completion")
        # line mode: the completion stops at the end of the line
        assert editor.ghost_text == "print(fibonacci(10))"
        assert editor.ghost_spans[-2:] == [(")", "band-4"), (")", "band-0")]  # layer 30 is the final layer: red


async def test_tab_inserts_the_completion(tmp_path):
    app, engine, _ = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        editor = app.query_one(CodeEditor)
        await completed(pilot)
        assert editor.text == EXAMPLE  # ghost text is not in the buffer
        await pilot.press("tab")
        assert editor.text == EXAMPLE + "print(fibonacci(10))"
        assert editor.ghost_text == ""
        assert editor.cursor_location == (5, len("    print(fibonacci(10))"))
        assert app.dirty


async def test_tab_without_a_completion_indents(tmp_path):
    app, engine, _ = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("tab")
        assert app.query_one(CodeEditor).text == EXAMPLE + "    "


async def test_escape_dismisses_the_completion(tmp_path):
    app, engine, _ = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        editor = app.query_one(CodeEditor)
        await pilot.press("f5")
        await wait_for(pilot, lambda: editor.ghost_text == "print(fibonacci(10))", what="a completion")
        await pilot.press("escape")
        assert editor.ghost_text == "" and editor.suggestion == ""
        assert app.live is None
        assert editor.text == EXAMPLE
        assert editor.has_focus  # Esc does not move the focus out of the editor


async def test_knob_changes_the_engine_threshold_between_tokens(tmp_path):
    app, engine, _ = make_app(tmp_path, FakeEngine(gated=True))
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("f5")
        engine.release(1)
        await wait_for(pilot, lambda: app.live and len(app.live.events) == 1, what="token 1")
        await pilot.press("f9")  # keyboard: threshold up one step
        engine.release(1)
        await wait_for(pilot, lambda: len(app.live.events) == 2, what="token 2")
        await pilot.click("#threshold-down")  # mouse: the knob's - button, twice
        await pilot.click("#threshold-down")
        engine.release(1)
        await wait_for(pilot, lambda: len(app.live.events) == 3, what="token 3")
        await pilot.click("#threshold-bar", offset=(0, 0))  # mouse: the far left of the bar is 0
        engine.release(1)
        await wait_for(pilot, lambda: len(app.live.events) == 4, what="token 4")
        assert [event.policy for event in app.live.events] == ["agent:0.9", "agent:0.92", "agent:0.88", "agent:0"]
        assert app.query_one(CodeEditor).has_focus  # clicking the knob leaves the focus in the editor
        engine.release(20)


async def test_typing_cancels_an_in_flight_completion(tmp_path):
    app, engine, _ = make_app(tmp_path, FakeEngine(gated=True))
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        editor = app.query_one(CodeEditor)
        await pilot.press("f5")
        engine.release(2)
        await wait_for(pilot, lambda: len(editor.ghost_spans) == 2, what="two tokens")
        await pilot.press("x")
        assert editor.ghost_text == ""
        engine.release(20)  # the stream may take the one token it was waiting for, then must stop
        await wait_for(pilot, lambda: engine.summaries, what="the stream to end")
        assert engine.summaries[0].stop_reason == "cancelled"
        assert engine.summaries[0].tokens <= 3
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert editor.text == EXAMPLE + "x"
        assert editor.ghost_text == ""


async def test_policy_key_cycles_agent_full_confidence(tmp_path):
    app, engine, _ = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.policy == "agent:0.9"
        for expected in ("full", "confidence:0.9", "agent:0.9"):
            await pilot.press("f3")
            assert app.policy == expected
        await pilot.press("f3")
        await pilot.press("f5")
        await wait_for(pilot, lambda: app.live and app.live.summary, what="a full-depth completion")
        assert {event.exit_layer for event in app.live.events} == {30}
        assert engine.streamed_policies == ["full"]


async def test_without_an_agent_it_starts_on_confidence_and_says_so(tmp_path):
    app, engine, _ = make_app(tmp_path, FakeEngine(agent_available=False))
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.policy == "confidence:0.9"
        note = str(app.query_one("#agent-note").render())
        assert "fake-smollm has no exit agent for agent:0.9: using confidence:0.9" in note
        await pilot.press("f3")
        assert app.policy == "full"
        await pilot.press("f3")
        assert app.policy == "confidence:0.9"


async def test_block_mode_runs_past_the_end_of_the_line(tmp_path):
    app, engine, _ = make_app(tmp_path, block_tokens=10)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("f2")
        assert app.mode == "block"
        await pilot.press("f5")
        await wait_for(pilot, lambda: app.live and app.live.summary, what="a block completion")
        assert app.live.summary.tokens == 10
        editor = app.query_one(CodeEditor)
        assert editor.ghost_text == "print(fibonacci(10))\n    return"
        assert editor.suggestion == "print(fibonacci(10))\u21b5    return"  # drawn on one line at the cursor
        await pilot.press("tab")
        assert editor.text.endswith("    print(fibonacci(10))\n    return")


async def test_a_block_stops_before_repeating_the_code_after_the_cursor(tmp_path):
    text = "def fibonacci(n):\n    return n\n\n\ndef main():\n    \n    return 0\n"
    app, engine, _ = make_app(tmp_path, text=text, block_tokens=10, mode="block")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        editor = app.query_one(CodeEditor)
        editor.move_cursor((5, 4))  # the empty line above `return 0`
        await pilot.press("f5")
        await wait_for(pilot, lambda: app.live and app.live.summary, what="a block completion")
        # the script goes on with "\n    return", which the line after the cursor already says
        assert engine.summaries[-1].text == "print(fibonacci(10))"
        assert editor.ghost_text == "print(fibonacci(10))"
        await pilot.press("tab")
        assert editor.text == "def fibonacci(n):\n    return n\n\n\ndef main():\n    print(fibonacci(10))\n    return 0\n"


async def test_while_streaming_a_block_shows_only_what_the_suffix_rule_will_keep():
    from greencode.decoding.fim import SuffixStop
    from tui.ghost import ghost_pieces

    events = [SimpleNamespace(text=text, exit_layer=layer) for text, layer in
              [("x = 1", 4), ("\n", 30), ("    ret", 8)]]
    rule = SuffixStop("def f():\n    ", "\n    return x\n")
    # "    ret" may yet become "return x" (the suffix's first line): it is held back, the rest is shown
    assert ghost_pieces(events, stop_rule=rule) == [("x = 1", 4)]
    assert ghost_pieces(events) == [("x = 1", 4), ("\n", 30), ("    ret", 8)]


async def test_idle_pause_triggers_a_completion(tmp_path):
    app, engine, _ = make_app(tmp_path, idle_ms=50)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        # once loaded, a first completion comes by itself; typing cancels it and asks again after the pause
        await wait_for(pilot, lambda: engine.prompts, what="the first idle completion")
        assert engine.prompts[0].endswith("def main():\n    ")
        await pilot.press("p")
        await wait_for(pilot, lambda: len(engine.prompts) == 2, what="the idle trigger after typing")
        assert engine.prompts[1].endswith("def main():\n    p")


async def test_side_panel_figures_follow_the_tokens(tmp_path):
    app, engine, _ = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await completed(pilot)
        stats = app.live.stats
        summary = app.live.summary
        assert stats.tokens == summary.tokens == 9
        assert stats.joules == pytest.approx(summary.joules)
        assert stats.joules_saved == pytest.approx(summary.joules_saved)
        assert stats.mean_exit_layer == pytest.approx(summary.mean_exit_layer)
        assert stats.layers_skipped_frac == pytest.approx(summary.layers_skipped_frac)
        assert stats.tokens_per_s == pytest.approx(summary.tokens_per_s)
        figures = str(app.query_one("#figures").render())
        assert f"{summary.joules:.3f} J" in figures and "estimate" in figures
        assert f"{summary.tokens_per_s:.1f} tok/s" in figures
        assert app.session.joules == pytest.approx(summary.joules)


async def test_model_that_fails_to_load_leaves_a_working_editor(tmp_path):
    def broken():
        raise GreencodeError("not-a-model: no such model directory")

    app, _, path = make_app(tmp_path)
    app._engine_factory = broken
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert "not-a-model" in str(app.query_one("#model-status").render())
        await pilot.press("f5")  # explains instead of failing
        await pilot.press("x", "ctrl+s")
        assert path.read_text() == EXAMPLE + "x"


async def test_help_screen_opens_and_closes(tmp_path):
    app, _, _ = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_compare_view_shows_both_completions_with_joules(tmp_path):
    app, engine, _ = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("f4")
        assert isinstance(app.screen, CompareScreen)
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.summaries) == 2, what="both completions")
        early, full = screen.summaries["early"], screen.summaries["full"]
        assert full.mean_exit_layer == 30 and early.mean_exit_layer < 30
        assert early.joules < full.joules
        verdict = str(screen.query_one("#compare-verdict").render())
        assert f"{early.joules / full.joules:.0%} of the full-depth joules" in verdict
        assert "texts identical" in verdict
        assert engine.streamed_policies[:2] == ["agent:0.9", "full"]  # each side streamed with its own policy
        assert app.policy == "agent:0.9"
        await pilot.press("escape")
        assert not isinstance(app.screen, CompareScreen)


async def test_quit_with_unsaved_changes_asks_first(tmp_path):
    app, _, path = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("x", "ctrl+q")
        assert isinstance(app.screen, ConfirmQuitScreen)
        await pilot.press("escape")  # cancel: still editing
        assert not isinstance(app.screen, ConfirmQuitScreen) and app.is_running
        await pilot.press("ctrl+q", "s")  # save and quit
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    assert path.read_text() == EXAMPLE + "x"


async def test_quit_without_changes_does_not_ask(tmp_path):
    app, _, _ = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")


async def test_non_utf8_file_opens_read_only_and_is_never_rewritten(tmp_path):
    path = tmp_path / "latin1.py"
    original = "x = 'caf\xe9'\n".encode("latin-1")
    path.write_bytes(original)
    app = GreencodeApp(open_source(path), TuiSettings(idle_ms=0), FakeEngine)
    async with app.run_test(size=SIZE) as pilot:
        editor = app.query_one(CodeEditor)
        assert editor.read_only
        assert "read-only" in str(app.query_one("#banner").render())
        await pilot.press("y", "ctrl+s")
        assert "y" not in editor.text
    assert path.read_bytes() == original


async def test_save_failure_keeps_the_buffer(tmp_path):
    folder = tmp_path / "gone"
    folder.mkdir()
    app, _, path = make_app(folder)
    async with app.run_test(size=SIZE) as pilot:
        path.unlink()
        folder.rmdir()  # nowhere left to write: saving must fail loudly and lose nothing
        await pilot.press("z", "ctrl+s")
        assert app.dirty
        assert app.query_one(CodeEditor).text == EXAMPLE + "z"
        assert any("not saved" in (n.title or "") for n in app._notifications)


async def test_huge_file_stays_responsive(tmp_path):
    text = "".join(f"value_{i} = {i}  # line {i}\n" for i in range(100_000))
    app, engine, _ = make_app(tmp_path, text=text)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        editor = app.query_one(CodeEditor)
        assert editor.language is None  # highlighting is off past 50k lines
        assert editor.cursor_location[0] == 99_999
        await pilot.press("x", "f5")
        await wait_for(pilot, lambda: app.live and app.live.summary, what="a completion in a huge file")
        assert len(engine.prompts[-1]) <= app.settings.max_context_chars
        assert engine.prompts[-1].endswith("# line 99999x")


async def test_tokens_keep_arriving_while_the_help_screen_is_open(tmp_path):
    app, engine, _ = make_app(tmp_path, FakeEngine(gated=True))
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("f5")
        engine.release(1)
        await wait_for(pilot, lambda: app.live and app.live.events, what="token 1")
        await pilot.press("f1")
        engine.release(20)
        await wait_for(pilot, lambda: app.live.summary is not None, what="the rest, behind the help screen")
        await pilot.press("escape", "tab")
        assert app.query_one(CodeEditor).text == EXAMPLE + "print(fibonacci(10))"


async def test_ctrl_space_completes(tmp_path):
    """Terminals send ctrl+space as NUL, which Textual names ctrl+@."""
    app, engine, _ = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+@")
        await wait_for(pilot, lambda: app.live and app.live.summary, what="a completion from ctrl+space")
        assert engine.prompts == [EXAMPLE]


async def test_the_knob_says_what_t_means_when_the_model_ships_a_calibration(tmp_path):
    """agent:T's measured meaning (the manifest's knob table, greencode.exits.knob) replaces the bare rule."""
    engine = FakeEngine()
    engine.agent_file = "/assets/agent.safetensors"
    table = {"0.9": {"python": {"agreement": 0.98, "modelled_speedup": 1.21},
                     "java": {"agreement": 0.99, "modelled_speedup": 1.29}}}
    engine.loaded.info = {"agent_path": engine.agent_file, "adaptation": {"knob": {"confirm": 0.6, "table": table}}}
    app, _, _ = make_app(tmp_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert "T = 0.90  ~98% of tokens as full depth, 1.25x modelled" in str(app.query_one("#policy-status").render())
        await pilot.press("f9", "f9")  # 0.94: no calibrated T within reach, so no claim; the rule again
        assert "T = 0.94  exit when P(exit) >= T" in str(app.query_one("#policy-status").render())
