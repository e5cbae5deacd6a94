"""`greencode …`: the composition root. Commands parse their options and call plain functions;
heavy imports (torch, transformers, textual, SB3) happen inside command bodies so --help is instant.

Config: `--config FILE` (default ./greencode.toml, else built-in defaults), and dotted overrides of any
key after a command, spaCy style: `greencode info --exits.points "[4,8]"` or `--agent.threshold 0.8`.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from greencode.context import OVERRIDES, load_context_config
from greencode.errors import GreencodeError
from greencode.mount import mount_commands, mount_group

app = typer.Typer(
    name="greencode",
    help="Energy-aware code completion by dynamic early exit (GREEN-CODE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[agent].path" must print as written
)


@app.callback()
def root(ctx: typer.Context,
         config: Optional[str] = typer.Option(None, "--config", "-c", help="greencode.toml to read "
                                              "(default: ./greencode.toml, else built-in defaults).")) -> None:
    ctx.obj = {"config_path": config}


@app.command(context_settings=OVERRIDES)
def info(ctx: typer.Context,
         model: Optional[str] = typer.Option(None, help="Model spec (default: [model].spec)."),
         as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Load a model and print its architecture, exit points, LITE weights and energy source."""
    from greencode.info import model_info

    config = load_context_config(ctx, **{"model.spec": model})
    facts = model_info(config)
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    for key, value in facts.items():
        typer.echo(f"{key:>22}: {value}")


# Every command and group, by "module:attribute": the whole surface of `greencode`, in one place.
COMMANDS = {
    "bench": "greencode.commands.bench:command",
    "complete": "greencode.commands.complete:command",
    "eval": "greencode.commands.eval:command",
    "serve": "greencode.commands.serve:command",
    "serve-bench": "greencode.commands.serve_bench:command",
    "typing-bench": "greencode.commands.typing_bench:command",
    "tui": "tui.cli:tui",
}
GROUPS = {"train": "train.cli:app"}

mount_commands(app, COMMANDS)
for _name, _spec in GROUPS.items():
    mount_group(app, _name, _spec)


def main() -> None:
    try:
        app()
    except GreencodeError as exc:
        typer.echo(f"greencode: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        interrupted()
    except SystemExit as exc:
        if exc.code == 130 and _caused_by_ctrl_c(exc):  # Typer turns Ctrl-C into a silent Exit(130)
            interrupted()
        raise


def _caused_by_ctrl_c(exc: BaseException) -> bool:
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def interrupted() -> None:
    typer.echo("greencode: interrupted", err=True)
    sys.exit(130)


if __name__ == "__main__":
    main()
