"""`greencode serve`: the editor endpoint (llm-vscode / llm-ls, TGI and HF Inference API routes; OpenAI and
Ollama completion and chat routes for Continue, Twinny, Open WebUI and llm-ls's openai/ollama backends)."""

from __future__ import annotations

from typing import Optional

import typer

from greencode.exits.policies import POLICY_FORMS


def refuse_open_host(serve) -> None:
    """A non-loopback address without a token lets anyone on the network use the model: say so, stop."""
    from greencode.errors import GreencodeError
    from greencode.serve.guard import is_loopback_host

    if not is_loopback_host(serve.host.strip("[]").lower()) and not serve.token and not serve.allow_unauthenticated:
        raise GreencodeError(f"--host {serve.host} is reachable from other machines and no --token is set; "
                             "add --token SECRET, or --allow-unauthenticated if that is what you want")


def command(ctx: typer.Context,
            host: Optional[str] = typer.Option(None, help="Address to bind (default [serve].host, 127.0.0.1). "
                                               "Anything but loopback exposes the model: set --token."),
            port: Optional[int] = typer.Option(None, help="TCP port (default [serve].port, 8080)."),
            model: Optional[str] = typer.Option(None, help="Model spec (default [model].spec)."),
            agent: Optional[str] = typer.Option(None, help="Exit agent .safetensors (default [agent].path)."),
            policy: Optional[str] = typer.Option(None, help=f"Default exit policy: {POLICY_FORMS} (default "
                                                 "[engine].policy; agent:T falls back to confidence:T on a model "
                                                 "without an agent)."),
            threshold: Optional[float] = typer.Option(None, help="Threshold of the default policy (T, P or H)."),
            token: Optional[str] = typer.Option(None, help="Require 'Authorization: Bearer TOKEN' "
                                                "(default [serve].token)."),
            threads: Optional[int] = typer.Option(None, help="torch CPU threads (default [serve].threads; 0 = "
                                                  "one per core). 1 is fastest on a CPU shared with other work."),
            log_level: str = typer.Option("info", help="uvicorn log level: critical | error | warning | info | debug."),
            allow_unauthenticated: Optional[bool] = typer.Option(
                None, "--allow-unauthenticated", help="Serve a non-loopback --host without --token (default "
                "[serve].allow_unauthenticated; anyone who can reach the address may use the model)."),
            ) -> None:
    """Serve completions over HTTP: TGI (POST /generate, /generate_stream) for llm-vscode, OpenAI (POST
    /v1/completions, /v1/chat/completions) and Ollama (POST /api/generate, /api/chat) for Continue, Twinny, Open
    WebUI and llm-ls; fill-in-the-middle on the completion routes. Clients name the model [serve].model_id
    ("greencode"); see docs/editors.md."""
    from greencode.context import load_context_config
    from greencode.errors import GreencodeError

    levels = ("critical", "error", "warning", "info", "debug")
    if log_level not in levels:
        raise GreencodeError(f"--log-level {log_level!r} is not one of: {', '.join(levels)}")
    config = load_context_config(ctx, **{"serve.host": host, "serve.port": port, "model.spec": model,
                                         "agent.path": agent, "engine.policy": policy, "serve.token": token,
                                         "serve.threads": threads,
                                         "serve.allow_unauthenticated": allow_unauthenticated})
    refuse_open_host(config.serve)
    from greencode.serve.guard import origin_patterns

    origin_patterns(config.serve.allowed_origins)  # a bad entry is one line before the model loads
    from greencode.runtime import engine_from_config, policy_or_fallback
    from greencode.serve.app import build_app, listen_socket, run_server

    sock = listen_socket(config.serve.host, config.serve.port)
    if config.serve.threads:
        import torch

        torch.set_num_threads(config.serve.threads)
    engine = engine_from_config(config, typed_text=True, shared_prefixes=True)
    default_policy, note = policy_or_fallback(engine, config.engine.policy, threshold)
    if note:
        typer.echo(f"note: {note}", err=True)
    app = build_app(engine, config, default_policy)
    serve = config.serve
    typer.echo(f"greencode serve: {engine.loaded.name} as '{app.state.model_id}', {engine.num_layers} layers, "
               f"exits {engine.exit_points}, policy {default_policy.name}, energy {engine.meter.source}, "
               f"auth {'on' if serve.token else 'off'} -> http://{serve.host}:{serve.port}/generate, /v1/completions, "
               f"/v1/chat/completions, /api/generate, /api/chat", err=True)
    run_server(app, sock, log_level=log_level)
