"""`greencode train …`: LITE fine-tuning, the exit agent and the shipped-assets recipe."""

from __future__ import annotations

import typer

from greencode.mount import mount_commands

app = typer.Typer(help="Train: LITE fine-tuning and the RL exit agent.", no_args_is_help=True,
                  rich_markup_mode=None)

COMMANDS = {
    "agent": "train.commands.agent:command",
    "default": "train.commands.default:command",
    "finetune": "train.commands.finetune:command",
    "knob": "train.commands.knob:command",
    "trajectories": "train.commands.trajectories:command",
    "weights": "train.commands.weights:command",
}
mount_commands(app, COMMANDS)
