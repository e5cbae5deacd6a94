"""`greencode train knob`: calibrate what agent:T means on the installed default (confirm bound, T's meaning)."""

from __future__ import annotations

import typer


def command(ctx: typer.Context,
            output: str = typer.Option("runs/knob", help="Where to write knob.json and the cached trajectories."),
            samples: int = typer.Option(80, help="Validation-split prompts per language (one per file; the stdlib's split has 84)."),
            tokens_per_sample: int = typer.Option(16, help="Greedy full-depth tokens generated per prompt."),
            ramp: int = typer.Option(0, help="R: agent:T's first R decoded tokens run stricter (chosen by "
                                     "`greencode eval`; recorded as given)."),
            install: bool = typer.Option(False, "--install", help="Write the knob into greencode/assets/manifest.json "
                                         "(agent:T then confirms with the calibrated bound).")) -> None:
    """Replay agent:T:C along full depth's greedy continuations of validation-split Python and Java: choose the
    confirm bound C (the best modelled speed-up at >= 95% token agreement with full depth in both languages)
    and tabulate, per T, the share of tokens equal to full depth's and the modelled speed-up. Writes
    OUTPUT/knob.json; --install puts it into the shipped manifest as "knob" (greencode info and the TUI show it)."""
    import json
    from pathlib import Path

    from greencode.context import load_context_config
    from greencode.files.atomic import atomic_write_text
    from greencode.model.load import ASSETS, load_model
    from train.assets.knob import calibrate_knob

    config = load_context_config(ctx)
    loaded = load_model("default")
    knob = calibrate_knob(config, loaded, output, samples, tokens_per_sample, ramp=ramp,
                          log=lambda line: typer.echo(line, err=True))
    target = Path(output)
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target / "knob.json", json.dumps(knob, indent=2))
    for t, row in knob["table"].items():
        typer.echo(f"agent:{t}  " + "  ".join(f"{lang}: {f['agreement']:.1%} as full depth, "
                                             f"{f['modelled_speedup']:.2f}x modelled" for lang, f in row.items()))
    typer.echo(f"confirm bound C = {knob['confirm']:g}, ramp R = {knob['ramp']}; wrote {target / 'knob.json'}")
    if install:
        manifest_path = ASSETS / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["knob"] = {**manifest.get("knob", {}), **knob}  # keeps the evals and choices recorded beside it
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
        typer.echo(f"installed the knob into {manifest_path}")
