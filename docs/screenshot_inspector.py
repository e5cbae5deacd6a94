"""Writes docs/inspector.svg: the token inspector on the bundled example, with the real default model.

    PYTHONPATH=. python docs/screenshot_inspector.py [OUT.svg]

Headless (Textual's Pilot): completes the last line of greencode/examples/fibonacci.py in block mode with
the shipped agent, opens the inspector (F6) on the first token that left early, waits for its candidates,
and saves the screen with `App.save_screenshot`. Takes about a minute on a CPU (mostly the model load).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = (130, 42)


async def wait_for(pilot, condition, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        await pilot.pause(0.1)


async def main(out: Path) -> None:
    from greencode.config import load_config
    from greencode.files.source import open_source
    from tui.app import GreencodeApp
    from tui.editor import CodeEditor
    from tui.engines import real_engine_factory
    from tui.inspector import InspectorScreen
    from tui.settings import settings_from_config

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "fibonacci.py"
        shutil.copy(ROOT / "greencode" / "examples" / "fibonacci.py", path)
        config = load_config(None, {"tui.idle_ms": 0, "tui.mode": "block", "tui.block_tokens": 12})
        settings = settings_from_config(config)
        os.chdir(scratch)  # the title shows the path as given: keep it short
        app = GreencodeApp(open_source(path.name), settings, real_engine_factory(settings))
        async with app.run_test(size=SIZE) as pilot:
            app.query_one(CodeEditor).cursor_blink = False
            await wait_for(pilot, lambda: app.engine is not None or app.model_error)
            if app.model_error:
                raise SystemExit(app.model_error)
            await pilot.press("f5")
            await wait_for(pilot, lambda: app.live is not None and app.live.summary is not None)
            await pilot.press("f6")
            screen = app.screen
            assert isinstance(screen, InspectorScreen)
            await wait_for(pilot, lambda: screen.selected in screen.explanations)
            await pilot.pause(0.5)
            app.save_screenshot(filename=out.name, path=str(out.parent))
        os.chdir(ROOT)
    print(f"wrote {out}")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "inspector.svg").resolve()
    asyncio.run(main(target))
