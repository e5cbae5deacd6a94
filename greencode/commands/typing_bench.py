"""`greencode typing-bench`: an editor's requests while the user types, with and without prefix reuse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from greencode.serve.typing_bench import MAX_REQUESTS, MAX_STEP  # light: its heavy imports are inside functions


def command(ctx: typer.Context,
            model: str = typer.Option("default", help="Model spec both servers load."),
            policy: str = typer.Option("confidence:0.9", help="The servers' exit policy."),
            requests: int = typer.Option(30, help=f"Requests in the typing session (2..{MAX_REQUESTS})."),
            step: int = typer.Option(3, help=f"Characters typed between requests (1..{MAX_STEP})."),
            context_chars: int = typer.Option(1500, help="About this many characters before the cursor."),
            max_new_tokens: int = typer.Option(15, help="New tokens per request."),
            time_limit: float = typer.Option(1800, help="Give up after this many seconds."),
            server_threads: int = typer.Option(1, help="torch CPU threads of each server."),
            json_out: Optional[str] = typer.Option(None, "--json", help="Also write the report as JSON here.")) -> None:
    """Time an editor's requests while the user types, with [engine].prefix_cache on and off: two servers on
    127.0.0.1 get the same growing prompts (test-split files, --step characters more each time) in turn, and
    the report gives p50/p95 latency of each, their ratio and whether the completions are identical."""
    from greencode.files.atomic import atomic_write_text
    from greencode.context import load_context_config
    from greencode.serve.typing_bench import print_report, run_typing_bench

    report = run_typing_bench(model, policy, requests, step, context_chars, max_new_tokens, time_limit,
                              load_context_config(ctx), server_threads)
    print_report(report)
    if json_out:
        target = Path(json_out)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, json.dumps(report, indent=2))
