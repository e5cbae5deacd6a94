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
        from greencode.energy import EnergyMeter
        from greencode.engine import EarlyExitEngine
        from greencode.models import load_model
        from greencode.info import resolve_exit_points
        from greencode.prefix_cache import prefix_cache_for

        config = settings.config
        loaded = load_model(settings.model_spec, config.model.dtype, config.model.device, config.model.cache_dir)
        points = resolve_exit_points(config, loaded.num_layers, loaded.info)
        # Built on `full`; the app then sets the requested policy, so a missing agent is a note, not a failure.
        return EarlyExitEngine(loaded, "full", EnergyMeter(config.energy), points,
                               config.engine.max_context_tokens, settings.agent_path or None,
                               prefix_cache=prefix_cache_for(config.engine),  # idle completions reuse the file's prefix
                               token_healing=config.engine.token_healing, shortlist=config.exits.shortlist)

    return build


def describe_engine(engine: Any) -> str:
    loaded = getattr(engine, "loaded", None)
    name = getattr(loaded, "name", None) or "model"
    points = ",".join(str(p) for p in engine.exit_points)
    head = engine.describe_exit_head() if hasattr(engine, "describe_exit_head") else ""
    return f"{name}\nexits at {points} of {engine.num_layers}" + (f"\n{head}" if head else "")
