"""`greencode train …`: each module in train/commands/ with a `command` function is one sub-command."""

from __future__ import annotations

import importlib
import pkgutil

import typer

import train.commands

app = typer.Typer(help="Train: LITE fine-tuning and the RL exit agent.", no_args_is_help=True,
                  rich_markup_mode=None)

for _found in sorted(pkgutil.iter_modules(train.commands.__path__), key=lambda m: m.name):
    _module = importlib.import_module(f"train.commands.{_found.name}")
    app.command(_found.name, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        _module.command)
