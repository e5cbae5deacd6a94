"""`greencode complete FILE`: one completion at a position, streamed with each token coloured by its
exit layer, then a one-line summary. The scriptable twin of the TUI."""

from __future__ import annotations

from typing import Optional

import typer

from greencode.exits.policies import POLICY_FORMS


def prompt_at(text: str, at: str | None) -> str:
    """The text before LINE:COL (1-based; COL may be past the line's end), or all of it."""
    from greencode.errors import GreencodeError

    if at is None:
        return text
    line_text, _, col_text = at.partition(":")
    try:
        line, col = int(line_text), int(col_text or "1")
    except ValueError:
        raise GreencodeError(f"--at {at!r}: expected LINE:COL, e.g. --at 12:5") from None
    start = 0  # of LINE, found without splitting the file (it may have millions of lines)
    for _ in range(line - 1 if line >= 1 else 0):
        start = text.find("\n", start) + 1
        if start == 0:
            break
    if line < 1 or start == 0 and line > 1 or col < 1:
        raise GreencodeError(f"--at {at}: the file has {text.count(chr(10)) + 1} lines; LINE and COL start at 1")
    end = text.find("\n", start)
    return text[:min(start + col - 1, len(text) if end < 0 else end)]


def command(ctx: typer.Context,
            file: str = typer.Argument(..., help="Code file to complete."),
            at: Optional[str] = typer.Option(None, help="LINE:COL (1-based) of the cursor; default: end of file."),
            policy: Optional[str] = typer.Option(None, help=f"{POLICY_FORMS} (default: [engine].policy; agent:T "
                                                 "falls back to confidence:T on a model without an agent)."),
            threshold: Optional[float] = typer.Option(None, help="T for agent:T / P for confidence:P."),
            max_new_tokens: Optional[int] = typer.Option(None, help="Tokens to generate (default [engine])."),
            line: bool = typer.Option(False, "--line", help="Stop at the end of the line."),
            model: Optional[str] = typer.Option(None, help="Model spec (default: [model].spec)."),
            agent: Optional[str] = typer.Option(None, help="Agent file for agent:T (default: [agent].path).")) -> None:
    """Complete FILE at a position; print tokens coloured by exit layer and a summary. Writes nothing."""
    from rich.console import Console
    from rich.text import Text

    from greencode.exits.bands import band_colour
    from greencode.context import load_context_config
    from greencode.errors import GreencodeError
    from greencode.runtime import engine_from_config, policy_or_fallback
    from greencode.decoding.window import text_window
    from greencode.files.source import open_source

    config = load_context_config(ctx, **{"model.spec": model, "agent.path": agent, "engine.policy": policy,
                                         "engine.max_new_tokens": max_new_tokens})
    source = open_source(file)
    prompt = text_window(prompt_at(source.text, at))  # the window around the cursor, as the TUI and serve read
    if not prompt.strip():
        raise GreencodeError(f"{file}: nothing before the cursor to complete from")
    engine = engine_from_config(config, typed_text=True)
    chosen, note = policy_or_fallback(engine, config.engine.policy, threshold)
    console = Console(highlight=False)
    if note:
        Console(stderr=True, highlight=False).print(f"note: {note}", markup=False)
    completion = engine.stream(prompt, chosen, config.engine.max_new_tokens, stop_at_eol=line,
                               temperature=config.engine.temperature, top_p=config.engine.top_p,
                               seed=config.engine.seed)
    for event in completion:
        console.print(Text(event.text, style=band_colour(event.exit_layer, event.num_layers)), end="")
    summary = completion.summary
    console.print()
    dropped = f", {summary.dropped_prompt_tokens} context tokens dropped" if summary.dropped_prompt_tokens else ""
    console.print(
        f"[dim]{chosen.name}: {summary.tokens} tokens, {summary.tokens_per_s:.1f} tok/s, mean exit layer "
        f"{summary.mean_exit_layer:.1f}/{engine.num_layers}, {summary.layers_skipped_frac:.0%} layers skipped, "
        f"{summary.joules:.2f} J ({summary.energy_source}), {summary.joules_saved:.2f} J saved vs full depth"
        f"{dropped}[/dim]")
