"""`greencode train trajectories`: build the RL trajectory cache through the engine."""

from __future__ import annotations

from typing import Optional

import typer


def command(ctx: typer.Context,
            config: Optional[str] = typer.Option(None, "--config", "-c", help="greencode.toml to read."),
            model: Optional[str] = typer.Option(None, help="Model spec or fine-tuned DIR (default: [model].spec)."),
            samples: Optional[int] = typer.Option(None, help="Files sampled (default: [agent].samples)."),
            tokens: Optional[int] = typer.Option(None, help="Tokens generated per sample (default: "
                                                 "[agent].tokens_per_sample)."),
            output: Optional[str] = typer.Option(None, help="Cache directory (default: [agent].trajectories)."),
            force: bool = typer.Option(False, "--force", help="Rebuild even if a cache is already there.")) -> None:
    """Record what the agent would see at every exit point of greedily generated tokens.

    Each sampled train-split file is cut at 20-60% of its tokens (at most 512 context tokens) and completed at full depth by the engine (record=True).

    Writes OUTPUT/manifest.json (model, exit points, observation form) and npz shards. An existing cache for this model is reused unless --force.
    """
    from greencode.context import load_context_config

    if config is not None:
        ctx.find_root().obj = {**(ctx.find_root().obj or {}), "config_path": config}
    settings = load_context_config(ctx, **{"model.spec": model, "agent.samples": samples,
                                           "agent.tokens_per_sample": tokens, "agent.trajectories": output})
    from train.commands.agent import build_or_load_trajectories, print_cache_summary

    cache, _ = build_or_load_trajectories(settings, force)
    print_cache_summary(cache, settings.agent.trajectories)
