"""The playground on the real default model: load it in the worker, complete a few tokens, accept, save."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from greencode.config import load_config
from tests.tui.helpers import wait_for
from tui.app import GreencodeApp
from tui.editor import CodeEditor
from tui.engines import real_engine_factory
from tui.settings import settings_from_config
from greencode.files.source import open_source

EXAMPLE = Path(__file__).resolve().parents[2] / "greencode" / "examples" / "fibonacci.py"


@pytest.mark.integration
@pytest.mark.asyncio
async def test_real_model_completes_a_few_tokens_in_a_real_file(tmp_path):
    path = tmp_path / "fibonacci.py"
    shutil.copy(EXAMPLE, path)
    original = path.read_text()
    config = load_config(None, {"tui.idle_ms": 0, "engine.max_new_tokens": 4, "tui.policy": "confidence:0.5"})
    settings = settings_from_config(config)
    app = GreencodeApp(open_source(path), settings, real_engine_factory(settings))
    async with app.run_test(size=(110, 36)) as pilot:
        editor = app.query_one(CodeEditor)
        await pilot.press("#")  # the editor works while the model loads
        assert editor.text != original
        await pilot.press("backspace")
        await wait_for(pilot, lambda: app.engine is not None or app.model_error, timeout=600, what="the model")
        assert not app.model_error
        assert app.engine.num_layers == 30 and app.policy == "confidence:0.5"
        await pilot.press("f5")
        await wait_for(pilot, lambda: app.live is not None and app.live.summary is not None, timeout=600,
                       what="a real completion")
        summary, events = app.live.summary, app.live.events
        assert 1 <= summary.tokens <= 4 and len(events) == summary.tokens
        assert all(e.exit_layer in [*app.engine.exit_points, 30] for e in events)
        assert all(e.policy in ("prefill", "confidence:0.5") for e in events)
        assert app.live.stats.joules == pytest.approx(summary.joules)
        assert app.session.joules == pytest.approx(summary.joules) and summary.joules > 0
        assert editor.ghost_text == summary.text
        if summary.text:  # (an empty completion leaves nothing to accept: Tab would indent)
            await pilot.press("tab")
        await pilot.press("ctrl+s")
    # The cursor started at the end of the file's last line (in main): the completion went there.
    assert original.endswith("primes_below(\n")
    assert path.read_text() == original[:-1] + summary.text + "\n"
