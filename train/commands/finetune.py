"""`greencode train finetune`: LITE fine-tuning (weighted loss over the exit layers, one LM head)."""

from __future__ import annotations

from typing import Optional

import typer

PREFIX = "greencode train finetune"


def command(ctx: typer.Context,
            config: Optional[str] = typer.Option(None, "--config", "-c", help="greencode.toml to read."),
            model: Optional[str] = typer.Option(None, help="Model to fine-tune (default: model.spec)."),
            corpus: Optional[str] = typer.Option(None, help="Training corpus (default: data.corpus)."),
            output: Optional[str] = typer.Option(None, help="Output directory (default: finetune.output)."),
            max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N optimiser steps "
                                                    "(default: finetune.max_steps; 0 = auto: 100 on a CPU; -1 = run the epochs)."),
            resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in --output."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output."),
            benchmark: bool = typer.Option(False, "--benchmark", help="Measure training-step tokens/s instead: "
                                           "labels vs distill, full head vs shortlist, full vs LoRA, alternated "
                                           "in one run; trains and writes nothing."),
            bench_rounds: int = typer.Option(3, "--bench-rounds", help="Timed rounds of --benchmark."),
            as_json: bool = typer.Option(False, "--json", help="--benchmark: print one JSON object.")) -> None:
    """Fine-tune a model so every exit point decodes through the shared LM head (LITE).

    By default every exit learns the frozen teacher's final-layer distribution
    (finetune.targets = distill; labels = the paper's eq. 1). Writes OUTPUT: an HF
    model directory (safetensors; with LoRA the weights are merged and the adapter
    is also kept in OUTPUT/lora-adapter) and greencode.json (exit points, weights,
    steps, tokens, exit agreement before/after per language, validation loss per
    exit). On a CPU, unset batch sizes and steps default to a step of about a
    minute and a run of about two hours. Ctrl-C saves a checkpoint; --resume
    continues from it. Any key can be overridden: --finetune.lora true
    --finetune.learning_rate 1e-4. Runs unchanged under accelerate launch /
    torchrun (-m greencode.cli train finetune).
    """
    from rich.console import Console
    from rich.markup import escape

    from greencode.context import load_context_config

    if config is not None:
        ctx.find_root().obj = {**(ctx.find_root().obj or {}), "config_path": config}
    settings = load_context_config(ctx, **{"model.spec": model, "data.corpus": corpus,
                                           "finetune.max_steps": max_steps})  # its range checked with the rest

    from train.lite.finetune import run_finetune

    console = Console(stderr=True, soft_wrap=True)  # one line per message, however narrow
    if benchmark:
        _benchmark(console, settings, bench_rounds, as_json)
        return
    info = None
    try:
        info = run_finetune(settings, output=output, max_steps=max_steps, resume=resume, overwrite=overwrite,
                            echo=lambda text: console.print(f"[bold green]{PREFIX}[/]: {escape(text)}", highlight=False))
    except KeyboardInterrupt:  # before training began (loading, packing, the teacher cache): nothing kept
        pass
    if info is None:  # raised outside the handler, so the root's own Ctrl-C line is not added
        console.print(f"{PREFIX}: interrupted before training started; nothing half-written was left")
        raise typer.Exit(130)
    if info.get("interrupted"):
        console.print(f"interrupted at step {info['steps']}; checkpoint {info['checkpoint']}; "
                      "rerun with --resume to continue")
        raise typer.Exit(130)
    if "agreement_after" not in info:
        return  # a non-main process of a distributed run
    _print_table(console, info)


def _print_table(console, info: dict) -> None:
    from rich.table import Table

    reference = info.get("agreement_reference", "own final layer")
    table = Table(title=f"exit agreement with the {reference} ({info['validation_tokens']} validation tokens)")
    for column in ("layer", "before", "after", "val loss before", "val loss after"):
        table.add_column(column, justify="right")
    for layer in [*info["agreement_after"], str(max(int(k) for k in info["validation_loss"]))]:
        table.add_row(layer, str(info["agreement_before"].get(layer, "")), str(info["agreement_after"].get(layer, "")),
                      str(info["validation_loss_before"].get(layer, "")), str(info["validation_loss"].get(layer, "")))
    console.print(table)
    for language, after in info.get("by_language_after", {}).items():
        before = info.get("by_language_before", {}).get(language, {}).get("agreement", {})
        pairs = ", ".join(f"{layer}: {before.get(layer, '?')}->{value}" for layer, value in after["agreement"].items())
        console.print(f"{language} ({after['tokens']} tokens): {pairs}; full depth agrees with the "
                      f"{reference} on {after['final_agreement']:.1%}")
    console.print(f"{info['steps']} steps, {info['tokens_trained']} tokens, "
                  f"{info['throughput_tokens_per_s']} tokens/s in training steps")


def _benchmark(console, settings, rounds: int, as_json: bool) -> None:
    import json

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from train.lite.bench import run_step_benchmark

    result = run_step_benchmark(settings, rounds, echo=lambda text: console.print(f"{PREFIX}: {escape(text)}"))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"LITE training step, {result['tokens_per_step']} tokens, {result['rounds']} alternated rounds "
                        f"({result['model']}; load {result['load_average_before_after']})")
    for column in ("targets", "exit head", "weights", "tokens/s", "vs labels/full/full"):
        table.add_column(column, justify="right")
    for row in result["rows"]:
        table.add_row(row["targets"], row["exit_head"], row["weights"], str(row["tokens_per_s"]),
                      str(row["vs_labels_full_head_full_weights"]))
    Console().print(table)
