"""Mounting commands by name: each is a "module:attribute" string, imported when the CLI starts.

A module that fails to import does not make its command vanish: the command stays listed, its help says
what failed, and calling it is one error line (exit 2). tests/test_architecture.py reads these strings
as imports, so a loop through a mount is caught like any other.
"""

from __future__ import annotations

import importlib

import typer

from greencode.context import OVERRIDES
from greencode.errors import GreencodeError


def load_spec(spec: str):
    """"tui.cli:tui" -> the object, or the exception that importing it raised."""
    module_name, _, attribute = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # noqa: BLE001: any failure of a front end's import is reported, not fatal
        return exc


def mount_commands(app: typer.Typer, commands: dict[str, str]) -> None:
    """Add each `name -> "module:function"` as a command of `app`."""
    for name, spec in commands.items():
        found = load_spec(spec)
        app.command(name, context_settings=OVERRIDES)(
            _unavailable(name, spec, found) if isinstance(found, Exception) else found)


def mount_group(app: typer.Typer, name: str, spec: str) -> None:
    """Add the typer.Typer at `spec` as the sub-command group `name`."""
    found = load_spec(spec)
    if isinstance(found, Exception):
        app.command(name, context_settings=OVERRIDES)(_unavailable(name, spec, found))
    else:
        app.add_typer(found, name=name)


def _unavailable(name: str, spec: str, exc: Exception):
    reason = f"{spec.partition(':')[0]} failed to import ({type(exc).__name__}: {exc})"

    def command(ctx: typer.Context) -> None:
        raise GreencodeError(f"`greencode {name}` is unavailable: {reason}; reinstall with ./dev.sh")

    command.__doc__ = f"UNAVAILABLE: {reason}."
    return command
