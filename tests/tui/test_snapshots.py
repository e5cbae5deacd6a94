"""Snapshots of the main screen mid-completion and of the help screen (fake engine, fixed size, no clock).

Update after an intended change with: .venv/bin/python -m pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

from pathlib import Path

from tests.tui.fake_engine import FakeEngine
from tests.tui.helpers import EXAMPLE, loaded, wait_for
from tui.app import GreencodeApp
from tui.editor import CodeEditor
from tui.settings import TuiSettings
from greencode.files.source import open_source

SIZE = (110, 34)


def make(tmp_path: Path, monkeypatch, engine: FakeEngine) -> GreencodeApp:
    monkeypatch.chdir(tmp_path)  # the title shows the path as given: keep it the same on every machine
    Path("example.py").write_text(EXAMPLE)
    return GreencodeApp(open_source("example.py"), TuiSettings(idle_ms=0), lambda: engine)


def test_main_screen_mid_completion(snap_compare, tmp_path, monkeypatch):
    engine = FakeEngine(gated=True)
    app = make(tmp_path, monkeypatch, engine)

    async def five_tokens_in(pilot):
        app.query_one(CodeEditor).cursor_blink = False
        await loaded(pilot)
        await pilot.press("f5")
        engine.release(5)
        await wait_for(pilot, lambda: app.live is not None and len(app.live.events) == 5, what="five tokens")
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=five_tokens_in)
    finally:
        engine.release(50)  # let the stream finish so its thread ends


def test_help_screen(snap_compare, tmp_path, monkeypatch):
    app = make(tmp_path, monkeypatch, FakeEngine())

    async def open_help(pilot):
        app.query_one(CodeEditor).cursor_blink = False
        await loaded(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=open_help)


def test_inspector(snap_compare, tmp_path, monkeypatch):
    engine = FakeEngine()
    app = make(tmp_path, monkeypatch, engine)

    async def inspect_the_third_token(pilot):
        app.query_one(CodeEditor).cursor_blink = False
        await loaded(pilot)
        await pilot.press("f2", "f5")  # block mode: the whole script
        await wait_for(pilot, lambda: app.live is not None and app.live.summary is not None, what="the completion")
        await pilot.press("f6", "right", "right")
        await wait_for(pilot, lambda: 2 in getattr(app.screen, "explanations", {}), what="token 3 explained")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=inspect_the_third_token)


def test_sweep_table(snap_compare, tmp_path, monkeypatch):
    engine = FakeEngine(script=[("print", 4), ("(", 8), ("x", 30), (")", 12), ("\n", 30)])
    app = make(tmp_path, monkeypatch, engine)

    async def sweep(pilot):
        app.query_one(CodeEditor).cursor_blink = False
        await loaded(pilot)
        await pilot.press("f7")
        await wait_for(pilot, lambda: getattr(app.screen, "finished", False), what="the sweep")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=sweep)
