"""`greencode train default`: build (and optionally install) the shipped default adaptation + agent."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def command(ctx: typer.Context,
            output: str = typer.Option("runs/default-assets", help="Where to write the artifacts."),
            train_tokens: int = typer.Option(24576, help="Corpus tokens whose hidden states fit the exit maps."),
            validation_tokens: int = typer.Option(4096, help="Held-out tokens for the agreement figures."),
            distill_steps: int = typer.Option(0, help="KL distillation steps after the least-squares fit."),
            samples: Optional[int] = typer.Option(None, help="Trajectory samples (default: [agent].samples)."),
            timesteps: Optional[int] = typer.Option(None, help="PPO steps (default: [agent].timesteps)."),
            install: bool = typer.Option(False, "--install", help="Copy the artifacts into greencode/assets/."),
            install_only: bool = typer.Option(False, "--install-only", help="Install what OUTPUT holds; train nothing."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace artifacts already in OUTPUT."),
            reuse_maps: bool = typer.Option(False, "--reuse-maps", help="Keep the exit maps (and trajectory cache) "
                                            "OUTPUT already holds: continue an interrupted build."),
            agent_method: str = typer.Option("supervised", help="supervised (predict that the exit is already right) "
                                             "or ppo (the paper's rewards; on SmolLM2 it learns never to exit).")) -> None:
    """Train exit maps on the packaged SmolLM2-135M and an exit agent on the adapted model.

    Writes OUTPUT/exit_maps.safetensors, OUTPUT/agent.safetensors, OUTPUT/manifest.json (plus the trajectory
    cache and the agent's report and plots); with --install, copies the three files into greencode/assets/.
    """
    from greencode.cli import load_context_config
    from greencode.errors import GreencodeError
    from train.default_assets import MANIFEST, build_default, install as install_assets

    config = load_context_config(ctx)
    if agent_method not in ("supervised", "ppo"):
        raise GreencodeError(f"--agent-method {agent_method!r}: choose supervised or ppo")
    target = Path(output)
    if not install_only:
        if (target / MANIFEST).exists() and not (overwrite or reuse_maps):
            raise GreencodeError(f"{target}: already holds a build; pass --overwrite or another --output")
        manifest = build_default(config, target, train_tokens, validation_tokens, distill_steps,
                                 samples or config.agent.samples, timesteps or config.agent.timesteps,
                                 log=lambda line: typer.echo(line, err=True), reuse_maps=reuse_maps,
                                 agent_method=agent_method)
        typer.echo(f"agreement after: {manifest['adaptation']['agreement_after']}")
    if install or install_only:
        for path in install_assets(target):
            typer.echo(f"installed {path}")
