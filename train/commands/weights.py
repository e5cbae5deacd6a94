"""`greencode train weights`: hold a weight form against fp32 at full depth (the quality rule `auto` reads)."""

from __future__ import annotations

import typer


def command(ctx: typer.Context,
            form: str = typer.Option("int8", help="The weight form to check against fp32 (fp16 or int8)."),
            samples: int = typer.Option(100, min=1, help="Test-split samples per language (the stdlib's split has 89)."),
            output: str = typer.Option("runs/weights", help="Where the evals and weights_quality.json go."),
            install: bool = typer.Option(False, "--install", help="Write the record beside the model: greencode/assets/ "
                                         "for the default, DIR/adaptation/ for a model directory (`auto` then "
                                         "picks a form that passed).")) -> None:
    """Run `greencode eval` (policy full) in fp32 and in FORM on the test split of each language (the stdlib and a
    JDK's src.zip, or data.corpus for both) and record, per language, FORM's ROUGE-L over fp32's, decode speed
    and the share of completions identical to fp32's. `auto` picks FORM for the model only when every language
    keeps >= 99% (greencode/model/weights.py). Writes OUTPUT/weights_quality.json."""
    import json
    from pathlib import Path

    from greencode.context import load_context_config
    from greencode.errors import GreencodeError
    from greencode.files.atomic import atomic_write_text
    from greencode.model.load import ASSETS, OWN_ADAPTATION
    from greencode.model.weights import QUALITY_RECORD
    from train.assets.weights_quality import measure_form

    config = load_context_config(ctx)
    target = Path(output)
    spec = config.model.spec
    installed = ASSETS / QUALITY_RECORD if spec in ("default", "default-base") else None
    if install and installed is None:
        if not (Path(spec).expanduser() / "config.json").is_file():
            raise GreencodeError(f"--install: {spec} has no folder to keep a record in (a model directory or the "
                                 "default has one); drop --install and keep OUTPUT/weights_quality.json")
        installed = Path(spec).expanduser() / OWN_ADAPTATION / QUALITY_RECORD
    record = measure_form(config, form, samples, target, echo=lambda line: typer.echo(line, err=True))
    facts = record[form]
    for language, ratio in facts["rouge_l_vs_fp32"].items():
        typer.echo(f"{language}: {form} ROUGE-L {ratio:.1%} of fp32's over {facts['samples'][language]} samples, "
                   f"{facts['identical_completions'][language]:.0%} of completions identical, decode "
                   f"{facts['decode_vs_fp32'][language]:.2f}x fp32's")
    verdict = "passes" if facts["passes"] else "fails"
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target / QUALITY_RECORD, json.dumps(record, indent=2) + "\n")
    typer.echo(f"{form} {verdict} the rule (>= {facts['rule']:.0%} in every language); wrote {target / QUALITY_RECORD}")
    if install:
        installed.parent.mkdir(parents=True, exist_ok=True)
        try:
            current = json.loads(installed.read_text()) if installed.is_file() else {}
        except ValueError:
            current = {}  # a damaged record is replaced whole
        current = current if isinstance(current, dict) else {}
        atomic_write_text(installed, json.dumps({**current, **record}, indent=2) + "\n")
        typer.echo(f"installed into {installed}")
