"""`greencode train default`: build (and optionally install) the shipped default: shortlist, exit maps, agent."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from train.assets.recipe import Recipe  # light: its heavy imports are inside functions


def command(ctx: typer.Context,
            output: str = typer.Option("runs/default-assets", help="Where to write the artifacts (and the caches "
                                       "a later run reuses: hidden states, trajectories)."),
            shortlist: int = typer.Option(Recipe.shortlist, help="K: the exit head's tokens, the K most frequent of the train split."),
            count_tokens: int = typer.Option(Recipe.count_tokens, help="Tokens counted per language for the shortlist (0 = all)."),
            train_tokens: int = typer.Option(Recipe.train_tokens, help="Teacher-forced calibration tokens per language whose "
                                             "hidden states fit the exit maps and teach the agent (the default "
                                             "holds ~13 GB of states in memory)."),
            validation_tokens: int = typer.Option(Recipe.validation_tokens, help="Held-out tokens per language for the agreement figures."),
            kl_epochs: float = typer.Option(Recipe.kl_epochs, help="Passes of KL distillation through the shortlist head "
                                            "(0 = least squares only)."),
            mlp_rank: int = typer.Option(Recipe.mlp_rank, help="Rank of the residual MLP per exit (0 = none)."),
            mlp_epochs: float = typer.Option(Recipe.mlp_epochs, help="Passes training the MLP."),
            samples: int = typer.Option(Recipe.trajectory_samples, help="Trajectory prompts per language for the agent."),
            tokens_per_sample: int = typer.Option(Recipe.tokens_per_sample, help="Greedy tokens generated per trajectory prompt."),
            timesteps: int = typer.Option(Recipe.timesteps, help="PPO steps with the paper's rewards (0 = supervised agent only); "
                                          "PPO ships only when its held-out trade-off is at least as good."),
            install: bool = typer.Option(False, "--install", help="Put the artifacts into greencode/assets/ (with --from DIR: "
                                         "into DIR/adaptation/, which `--model DIR` then loads)."),
            install_only: bool = typer.Option(False, "--install-only", help="Install what OUTPUT holds; train nothing."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Build again into an OUTPUT that holds a build "
                                           "(its caches are reused when they match)."),
            from_dir: Optional[str] = typer.Option(None, "--from", help="Build on a fine-tuned model directory "
                                                   "(greencode train finetune's OUTPUT) instead of default-base; "
                                                   "the manifest records its LITE run; --install puts the build "
                                                   "into DIR/adaptation/.")) -> None:
    """Calibrate the packaged SmolLM2-135M on Python (stdlib) and Java (a JDK's src.zip): a shortlist exit head,
    exit maps (least squares, KL, low-rank MLP: the best on held-out tokens), and an exit agent.

    Writes OUTPUT/shortlist.safetensors, exit_maps.safetensors, agent.safetensors and manifest.json (with the
    figures); with --install, puts them into greencode/assets/ (the old set stays until the new one is complete).
    """
    from greencode.context import load_context_config
    from greencode.errors import GreencodeError
    from greencode.model.load import ASSETS, OWN_ADAPTATION
    from train.assets.recipe import MANIFEST, build_default, check_fits, install as install_assets
    from train.run_output import output_lock, resume_or_overwrite

    config = load_context_config(ctx)
    target = Path(output)
    if from_dir is not None and not (Path(from_dir).expanduser() / "config.json").is_file():
        raise GreencodeError(f"--from {from_dir}: not a model directory (no config.json); give the OUTPUT of "
                             "greencode train finetune")
    if not install_only:
        recipe = Recipe(shortlist=shortlist, count_tokens=count_tokens, train_tokens=train_tokens,
                        validation_tokens=validation_tokens, kl_epochs=kl_epochs, mlp_rank=mlp_rank,
                        mlp_epochs=mlp_epochs, trajectory_samples=samples, tokens_per_sample=tokens_per_sample,
                        timesteps=timesteps)
        with output_lock(target, "greencode train default"):
            resume_or_overwrite(False, overwrite, interrupted=None, nothing_to_resume="",
                                results=target / MANIFEST if (target / MANIFEST).exists() else None)
            manifest = build_default(config, target, recipe, log=lambda line: typer.echo(line, err=True),
                                     spec=from_dir or "default-base")
        typer.echo(f"exit maps: {manifest['adaptation']['chosen']}; agent: {manifest['agent_training']['chosen']}")
    if install or install_only:
        # The shipped default's assets fit default-base's weights; a fine-tuned model's go into its own folder.
        check_fits(target, from_dir)
        where = ASSETS if from_dir is None else Path(from_dir).expanduser() / OWN_ADAPTATION
        for path in install_assets(target, where):
            typer.echo(f"installed {path}")
