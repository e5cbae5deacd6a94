"""`greencode train agent`: PPO exit agent on the trajectory cache (built first when missing)."""

from __future__ import annotations

import json
from typing import Optional

import typer


def build_or_load_trajectories(settings, force: bool = False):
    """(cache, exit points) for [model].spec, with a progress bar while building."""
    from greencode.exits.points import resolve_exit_points
    from greencode.progress import progress_bar, working
    from greencode.runtime import load_from_config
    from train.agent.trajectories import ensure_cache

    with working(f"loading {settings.model.spec}"):
        loaded = load_from_config(settings)
    points = resolve_exit_points(settings, loaded.num_layers, loaded.info)
    with progress_bar("trajectories", settings.agent.samples) as update:
        cache = ensure_cache(settings, loaded, points, force, progress=update)
    return cache, points


def print_cache_summary(cache, directory: str) -> None:
    optimal = cache.layer_of(cache.optimal_positions)
    shares = ", ".join(f"{layer}: {100 * (optimal == layer).mean():.0f}%"
                       for layer in [*cache.exit_points, cache.num_layers])
    typer.echo(f"{directory}: {len(cache.sample_bounds())} samples, {cache.num_tokens} tokens, model "
               f"{cache.model_name}, exit points {list(cache.exit_points)}")
    typer.echo(f"optimal exit layer share: {shares}")


def command(ctx: typer.Context,
            config: Optional[str] = typer.Option(None, "--config", "-c", help="greencode.toml to read."),
            model: Optional[str] = typer.Option(None, help="Model spec or fine-tuned DIR (default: [model].spec)."),
            timesteps: Optional[int] = typer.Option(None, help="PPO steps (default: [agent].timesteps)."),
            output: Optional[str] = typer.Option(None, help="Output directory (default: [agent].output)."),
            trajectories: Optional[str] = typer.Option(None, help="Trajectory cache (default: [agent].trajectories); "
                                                       "built first when missing."),
            rebuild: bool = typer.Option(False, "--rebuild-trajectories", help="Rebuild the cache first."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace an agent already in --output (the "
                                           "new run is staged in OUTPUT/.run-in-progress and moved in when done)."),
            resume: bool = typer.Option(False, "--resume", help="Continue the run Ctrl-C stopped (its PPO checkpoint "
                                        "in OUTPUT/.run-in-progress, loaded only if its recorded hash matches)."),
            benchmark: bool = typer.Option(False, "--benchmark", help="Measure raw env and PPO steps/s (beside "
                                           "CartPole) instead of training; writes nothing."),
            as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Train the RL exit agent with PPO (paper Table III settings from [agent]) and export it for agent:T.

    Writes OUTPUT/agent.safetensors (use it with --agent.path and policy agent:T).

    Ctrl-C keeps what was done: the trajectory cache's recorded samples (a rerun continues the build) and a
    PPO checkpoint (--resume continues the training).

    Also agent.json (optimal exit rate on held-out trajectories, exit rates by threshold, steps/s), reward_curve.png, exit_histogram.png, episodes.csv and logs/ (CSV; TensorBoard when installed).
    """
    from greencode.context import load_context_config

    if config is not None:
        ctx.find_root().obj = {**(ctx.find_root().obj or {}), "config_path": config}
    settings = load_context_config(ctx, **{"model.spec": model, "agent.output": output,  # checks --timesteps too
                                           "agent.trajectories": trajectories, "agent.timesteps": timesteps})
    if benchmark:
        _benchmark(settings, timesteps, as_json)
        return
    from pathlib import Path

    from greencode.config import check_reward
    from greencode.errors import GreencodeError
    from train.agent.run import AgentRun, run_settings
    from train.run_output import output_lock

    check_reward(settings.agent.reward)  # before any long work
    output = Path(settings.agent.output)
    if output.resolve() == Path(settings.agent.trajectories).resolve():
        raise GreencodeError(f"{output}: --output and --trajectories are one folder; each takes its own lock, so "
                             "give them separate folders")
    with output_lock(output, "greencode train agent"):
        AgentRun.start(output, None, overwrite, resume)  # the checks that need no cache, before building it
        cache, _ = build_or_load_trajectories(settings, rebuild)
        if not as_json:
            print_cache_summary(cache, settings.agent.trajectories)
        run = AgentRun.start(output, run_settings(settings.agent, cache), overwrite, resume)
        try:
            report = _train_with_bar(cache, settings, timesteps, run)
        except KeyboardInterrupt:
            if run.resuming:
                typer.echo(f"agent: PPO checkpoint at {run.recorded['timesteps']} steps in {run.staging}; "
                           "rerun with --resume to continue", err=True)
            raise
        run.finish()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    at = report["exit_rate_by_threshold"]
    typer.echo(f"{report['timesteps']} steps in {report['seconds']} s ({report['steps_per_s']} steps/s); "
               f"mean step reward {report['mean_step_reward']:.3f}")
    typer.echo(f"held-out ({report['held_out']['tokens']} tokens): optimal exit rate {report['optimal_exit_rate']:.3f} "
               f"(full depth: {report['full_depth_baseline']['optimal_exit_rate']:.3f}), optimal decisions "
               f"{report['optimal_decision_rate']:.3f}")
    for threshold, row in at.items():
        typer.echo(f"  T={threshold}: mean exit layer {row['mean_exit_layer']:.2f}/{report['num_layers']}, "
                   f"early exits {row['early_exit_rate']:.2f}, top-1 agreement {row['token_agreement']:.3f}")
    typer.echo(f"wrote {settings.agent.output}/agent.safetensors, agent.json, reward_curve.png, exit_histogram.png")


def _train_with_bar(cache, settings, timesteps: Optional[int], run) -> dict:
    from train.agent.ppo import train_agent

    total = timesteps or settings.agent.timesteps
    from greencode.progress import progress_bar

    with progress_bar("PPO steps", total) as update:
        return train_agent(cache, settings.agent, run.staging, timesteps, progress=update, run=run)


def _benchmark(settings, timesteps: Optional[int], as_json: bool) -> None:
    from pathlib import Path

    from train.agent.bench import run_benchmark
    from train.agent.trajectories import MANIFEST, load_cache

    directory = Path(settings.agent.trajectories)
    cache = load_cache(directory) if (directory / MANIFEST).is_file() else None
    result = run_benchmark(settings.agent, cache, ppo_timesteps=timesteps or 12_288)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        typer.echo(f"{key:>28}: {value}")
