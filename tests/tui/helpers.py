"""Building the playground around a fake engine, and waiting for it without sleeping blindly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.tui.fake_engine import FakeEngine
from tui.app import GreencodeApp
from tui.settings import TuiSettings
from greencode.files.source import open_source

EXAMPLE = "def fibonacci(n):\n    return n\n\n\ndef main():\n    "


def make_app(tmp_path: Path, engine: FakeEngine | None = None, text: str = EXAMPLE, name: str = "example.py",
             **settings) -> tuple[GreencodeApp, FakeEngine, Path]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    engine = engine or FakeEngine()
    settings.setdefault("idle_ms", 0)  # completions only on F5, unless a test asks for the idle trigger
    app = GreencodeApp(open_source(path), TuiSettings(**settings), lambda: engine)
    return app, engine, path


async def wait_for(pilot, condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.01)
        await asyncio.sleep(0)


async def loaded(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.engine is not None or pilot.app.model_error, what="the model")


async def completed(pilot, timeout: float = 10.0):
    """F5, then wait until the completion it started has finished; its summary."""
    app = pilot.app
    app.live = None
    await pilot.press("f5")
    await wait_for(pilot, lambda: app.live is not None and app.live.summary is not None, timeout=timeout,
                   what="a completion")
    return app.live.summary
