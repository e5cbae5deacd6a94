"""The engine the playground streams from. `greencode tui` uses `real_engine_factory`; tests pass their
own factory (anything returning an object with EarlyExitEngine's API) to `GreencodeApp`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tui.settings import TuiSettings

EngineFactory = Callable[[], Any]


def real_engine_factory(settings: TuiSettings) -> EngineFactory:
    """Load the model and build an EarlyExitEngine (called in the app's loading worker, off the UI)."""

    def build():
        from greencode.runtime import engine_from_config

        return engine_from_config(settings.config, settings.model_spec, agent_path=settings.agent_path,
                                  typed_text=True, shared_prefixes=True)  # idle completions reuse the file's prefix

    return build


def describe_engine(engine: Any) -> str:
    """The model panel: name, exit points and exit head, from the facts `greencode info` and /info show."""
    from greencode.info import model_facts

    facts = model_facts(engine, identity_only=True)
    points = ",".join(str(p) for p in facts["exit_points"])
    head = f"\nexit head: {facts['exit_head']}" if facts["exit_head"] else ""
    return f"{facts['model']}\nexits at {points} of {facts['num_layers']}{head}"
