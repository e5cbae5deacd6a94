"""The playground's completions reuse the prefix of the previous prompt (the engine's prefix cache),
built by the real engine factory from [engine].prefix_cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from greencode.config import load_config
from greencode.files.source import open_source
from tests.tui.helpers import completed, wait_for
from tui.app import GreencodeApp
from tui.editor import CodeEditor
from tui.engines import real_engine_factory
from tui.settings import settings_from_config

EXAMPLE = Path(__file__).resolve().parents[2] / "greencode" / "examples" / "fibonacci.py"


@pytest.mark.asyncio
async def test_a_second_completion_runs_only_the_new_tokens(tmp_path):
    path = tmp_path / "fibonacci.py"
    shutil.copy(EXAMPLE, path)
    config = load_config(None, {"tui.idle_ms": 0, "engine.max_new_tokens": 2, "tui.policy": "full",
                                "model.spec": "tiny-random-llama"})
    settings = settings_from_config(config)
    app = GreencodeApp(open_source(path), settings, real_engine_factory(settings))
    async with app.run_test(size=(110, 36)) as pilot:
        await wait_for(pilot, lambda: app.engine is not None or app.model_error, timeout=120, what="the model")
        assert not app.model_error
        first = await completed(pilot, timeout=120)
        await pilot.press("escape")
        await pilot.press("x")  # the user types on: the prompt grows by a character
        assert app.query_one(CodeEditor).text != path.read_text()
        second = await completed(pilot, timeout=120)
    assert first.reused_prompt_tokens == 0 and app.engine.prefix_cache is not None
    assert second.reused_prompt_tokens >= second.prompt_tokens - 3
