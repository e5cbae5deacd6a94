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

from greencode.errors import GreencodeError

OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}

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


def parse_dotted_args(args: list[str]) -> dict:
    """["--agent.threshold", "0.9", "--tui.mode=block"] -> {"agent.threshold": 0.9, "tui.mode": "block"}."""
    from greencode.config import parse_override_value

    overrides: dict = {}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("--") or "." not in arg.split("=")[0]:
            raise GreencodeError(f"unexpected argument {arg!r}; config overrides look like --section.key VALUE")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if not rest:
                raise GreencodeError(f"--{key} needs a value")
            value = rest.pop(0)
        overrides[key] = parse_override_value(value)
    return overrides


def load_context_config(ctx: typer.Context, **explicit):
    """The config for a command: file, then dotted overrides, then the command's own options."""
    from greencode.config import load_config

    overrides = parse_dotted_args(ctx.args)
    overrides.update({key: value for key, value in explicit.items() if value is not None})
    root_obj = ctx.find_root().obj or {}
    return load_config(root_obj.get("config_path"), overrides)


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


def _mount_groups() -> None:
    """Commands from greencode/commands/ (each module's `command`, named after the module), and the groups from the tui/ and train/ packages.

    Each module keeps its heavy imports inside the command body, so mounting them costs nothing.
    """
    import importlib
    import pkgutil

    import greencode.commands

    for found in sorted(pkgutil.iter_modules(greencode.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"greencode.commands.{found.name}")
        app.command(found.name.replace("_", "-"), context_settings=OVERRIDES)(module.command)  # serve_bench: serve-bench
    for module_name, group in (("train.cli", "train"), ("tui.cli", "tui")):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        if group == "tui":
            app.command("tui", context_settings=OVERRIDES)(module.tui)
        else:
            app.add_typer(module.app, name=group)


_mount_groups()


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
