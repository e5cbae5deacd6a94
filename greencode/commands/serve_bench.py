"""`greencode serve-bench`: a `greencode serve` process under concurrent load, loopback only, bounded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def command(ctx: typer.Context,
            model: str = typer.Option("default", help="Model spec the server loads."),
            policy: str = typer.Option("confidence:0.9", help="The server's exit policy."),
            requests: int = typer.Option(200, help="Requests to send (1..5000)."),
            concurrency: int = typer.Option(20, help="Concurrent clients (1..256)."),
            max_new_tokens: int = typer.Option(15, help="New tokens per request."),
            route: str = typer.Option("generate", help="generate (TGI /generate) | openai (/v1/completions)."),
            time_limit: float = typer.Option(1800, help="Stop sending after this many seconds (<= 3600)."),
            server_threads: int = typer.Option(0, help="The server's torch CPU threads (0 = its default; "
                                               "1 is fastest on a shared CPU)."),
            json_out: Optional[str] = typer.Option(None, "--json", help="Also write the report as JSON here.")) -> None:
    """Benchmark `greencode serve` under load: start a server on a free loopback port, send editor-like prompts
    (the text before a cursor in test-split files) from concurrent clients, and print p50/p90/p99 latency,
    tokens/s, J/token, errors and the server's memory over the run. Writes only --json's file; exits 1 when a
    request failed."""
    from greencode.files.atomic import atomic_write_text
    from greencode.context import load_context_config
    from greencode.serve.loadtest import print_report, run_bench

    config = load_context_config(ctx)
    report = run_bench(model, policy, requests, concurrency, max_new_tokens, time_limit, config,
                       ["--threads", str(server_threads)] if server_threads else None, route)
    print_report(report)
    if json_out:
        target = Path(json_out)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, json.dumps(report, indent=2))
    if report["errors"]:
        raise typer.Exit(1)
