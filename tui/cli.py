"""`greencode tui FILE`: mounted by greencode/cli.py. Textual and torch are imported inside the body."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from greencode.errors import GreencodeError
from greencode.exits.policies import POLICY_FORMS


def tui(ctx: typer.Context,
        file: str = typer.Argument(..., help="The file to edit (Python and Java are highlighted; other text is plain)."),
        model: Optional[str] = typer.Option(None, "--model", help="Model spec (default: tui.model, else model.spec)."),
        agent: Optional[str] = typer.Option(None, "--agent", help="Exit agent .safetensors for agent:T "
                                            "(default: tui.agent, else agent.path, else the model's own)."),
        policy: Optional[str] = typer.Option(None, "--policy", help=f"Starting policy: {POLICY_FORMS} "
                                             "(default: tui.policy, else engine.policy)."),
        threshold: Optional[float] = typer.Option(None, "--threshold", help="Starting T (or P) in [0, 1]; "
                                                  "the knob changes it live."),
        create: bool = typer.Option(False, "--create", help="Start FILE empty when it does not exist "
                                    "(written on the first ctrl+s).")) -> None:
    """Edit FILE with live early-exit completions, coloured by exit layer, with joules and a threshold knob.

    Completions stream in as ghost text at the cursor (Tab accepts, Esc dismisses); the side panel shows
    joules (this completion and the session), joules saved against full depth, tokens/s and exit layers.
    Writes FILE only when you save (ctrl+s, atomic). F1 lists the keys. Config overrides work too:
    --tui.idle_ms 0 (explicit key only), --tui.mode block, --engine.max_new_tokens 20.
    """
    from greencode.context import load_context_config
    from tui.settings import settings_from_config
    from greencode.files.source import open_source

    config = load_context_config(ctx, **{"tui.model": model, "tui.agent": agent, "tui.policy": policy})
    settings = settings_from_config(config, threshold)
    if agent is not None and not Path(agent).expanduser().is_file():
        raise GreencodeError(f"--agent {agent}: no such file; train one with `greencode train agent` or leave --agent out")
    source = open_source(file, create=create)

    from tui.app import GreencodeApp
    from tui.engines import real_engine_factory

    GreencodeApp(source, settings, real_engine_factory(settings)).run()
