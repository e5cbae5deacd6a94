"""`greencode serve`: an HTTP endpoint that llm-vscode / llm-ls can use as a Copilot.

Routes (TGI and HF Inference API shapes, see docs/architecture.md 'Editor endpoint'):

    POST /generate              {"inputs", "parameters"} -> {"generated_text", "details"}
    POST /generate_stream       the same, as server-sent events: one per token, the last with the text
    POST /  and /models/{model} HF Inference API: [{"generated_text", "details"}] ("stream": true for SSE)
    GET  /health, GET /info     liveness and queue; model, exit points, policy, threshold, energy source
    /v1/completions, /v1/models                  OpenAI (greencode/serve/openai.py)
    /api/generate, /api/tags, /api/version       Ollama (greencode/serve/ollama.py)

Every route goes through the same guard, validation (schema.py), FIM plan (greencode/decoding/fim.py) and queue.
Every error is JSON in the route's protocol shape (`error_body`): TGI {"error", "error_type"} (what llm-ls
shows the user), OpenAI {"error": {"message", "type", "code"}}, Ollama {"error"}: 401 bad token, 413 body or
input too long, 422 malformed JSON / wrong types / bad policy / bad FIM prompt, 429 queue full, never a traceback.
"""

from __future__ import annotations

import json
import time
from typing import AsyncIterator

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from greencode.config import Config
from greencode.errors import GreencodeError
from greencode.serve.guard import GuardMiddleware, error_body, public_message, undecodable_body
from greencode.serve.jobs import (ServerState, ServeError, _details, _policy_threshold, _start, _text, _token_json,
                                  generate_once, log, response_headers)
from greencode.serve.queue import GenerationJob, GenerationQueue
from greencode.decoding.fim import describe_fim
from greencode.serve.schema import GenerateRequest, describe_errors, describe_protocol_errors

def _sse(data: dict) -> bytes:
    return f"data:{json.dumps(data)}\n\n".encode()


async def stream_events(state: ServerState, job: GenerationJob, body: GenerateRequest,
                        full_text_default: bool) -> AsyncIterator[bytes]:
    """TGI stream: one event per token; the last token's event also carries generated_text and details.

    Each token is held until the next arrives (or the stream ends), so the last one is known to be last.
    Any way out of here before the end (disconnect, server stop) cancels the generation."""
    events, held, finished = [], None, False
    try:
        while True:
            kind, payload = await job.items.get()
            if kind == "token":
                if held is not None:
                    yield _sse({"index": held.index, "token": _token_json(state, held),
                                "generated_text": None, "details": None})
                held = payload
                events.append(payload)
            elif kind == "done":
                finished = True
                if held is not None:
                    yield _sse({"index": held.index, "token": _token_json(state, held),
                                "generated_text": _text(body, payload, full_text_default),
                                "details": _details(state, job, payload, events, body.parameters)})
                return
            else:
                finished = True
                yield _sse(error_body(payload[1], "generation"))
                return
    finally:
        if not finished:
            state.queue.cancel(job)


def build_app(engine, config: Config, default_policy=None):
    """The ASGI app around one engine. `default_policy` (an ExitPolicy or its string form; default
    [engine].policy, agent:T falling back as greencode.runtime says) serves requests that name none."""
    from greencode.decoding.fim import model_fim_form
    from greencode.runtime import policy_or_fallback

    default_policy, _ = policy_or_fallback(engine, default_policy or config.engine.policy)
    queue = GenerationQueue(engine, default_policy, config.serve.queue_limit)
    state = ServerState(engine, config, queue, time.time(), frozenset(engine.loaded.tokenizer.all_special_ids),
                        model_fim_form(engine.loaded.tokenizer))

    async def lifespan(app):
        queue.start()
        try:
            yield
        finally:
            queue.stop()

    app = FastAPI(title="greencode", version="1", docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Energy-aware code completion by dynamic early exit (TGI / HF Inference API)")
    app.state.greencode = state

    @app.exception_handler(ServeError)
    async def _serve_error(request, exc: ServeError):
        return JSONResponse(error_body(exc.message, exc.error_type, request.url.path), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        path = request.url.path
        protocol = "openai" if path.startswith("/v1/") else "ollama" if path.startswith("/api/") else None
        message = describe_protocol_errors(exc.errors(), protocol) if protocol else describe_errors(exc.errors())
        return JSONResponse(error_body(message, "validation", path), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        path = request.url.path
        if exc.status_code == 400:  # FastAPI could not decode the body at all: say why (its cause)
            return JSONResponse(error_body(undecodable_body(exc.__cause__), "validation", path), 422)
        return JSONResponse(error_body(str(exc.detail), "http", path), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body(f"internal error ({type(exc).__name__})", "internal", request.url.path),
                            status_code=500)

    async def answer(body: GenerateRequest, request: Request, full_text_default: bool, as_list: bool, stream: bool):
        if stream:
            job = await _start(state, body, request)
            return StreamingResponse(stream_events(state, job, body, full_text_default), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-accel-buffering": "no",
                                              **response_headers(job)})
        result = await generate_once(state, body, request, full_text_default)
        warnings = result["details"]["warnings"]
        return JSONResponse([result] if as_list else result,
                            headers={"x-greencode-warning": "; ".join(warnings)} if warnings else None)

    @app.post("/generate", summary="TGI generate")
    async def generate(body: GenerateRequest, request: Request):
        return await answer(body, request, False, as_list=False, stream=False)

    @app.post("/generate_stream", summary="TGI generate, server-sent events")
    async def generate_stream(body: GenerateRequest, request: Request):
        return await answer(body, request, False, as_list=False, stream=True)

    @app.post("/", summary="HF Inference API")
    async def inference_api(body: GenerateRequest, request: Request):
        return await answer(body, request, True, as_list=True, stream=bool(body.stream))

    @app.post("/models/{model:path}", summary="HF Inference API (any model name: this server has one)")
    async def inference_api_model(model: str, body: GenerateRequest, request: Request):
        return await answer(body, request, True, as_list=True, stream=bool(body.stream))

    @app.get("/health")
    async def health():
        return {"status": "ok", "queue": queue.snapshot(), "uptime_s": round(time.time() - state.started, 1)}

    @app.get("/info")
    async def info():
        loaded, policy, serve = engine.loaded, queue.default_policy, config.serve
        return {
            "model_id": public_message(loaded.name), "model": public_message(loaded.name),
            "spec": public_message(loaded.spec),
            "architecture": loaded.adapter.arch, "num_layers": engine.num_layers,
            "exit_points": list(engine.exit_points), "policy": policy.name,
            "threshold": _policy_threshold(policy), "energy_source": engine.meter.source,
            "device": str(engine.device), "cpu_threads": torch.get_num_threads(), "max_new_tokens_cap": serve.max_new_tokens_cap,
            "max_input_chars": serve.max_input_chars, "max_body_bytes": serve.max_body_bytes,
            "queue_limit": serve.queue_limit, "max_context_tokens": engine.max_context_tokens,
            "auth": bool(serve.token), "version": "greencode-serve/1", "limit_concurrency": serve.limit_concurrency,
            "fim": describe_fim(loaded.tokenizer),
        }

    from greencode.serve import ollama, openai

    openai.add_routes(app, state)
    ollama.add_routes(app, state)

    guarded = GuardMiddleware(app, config.serve.token, config.serve.max_body_bytes, config.serve.body_timeout_s,
                              config.serve.allow_unauthenticated)
    guarded.state = state  # for the command's start-up line and for tests
    return guarded


def listen_socket(host: str, port: int):
    """Bind before the model loads, so a taken port fails at once with one line."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GreencodeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                             "choose another --port or --host") from None
    sock.set_inheritable(True)
    return sock


def make_server(app, sock, log_level: str = "info"):
    """A uvicorn server on a bound socket (one process: the model lives in it once). Slow or idle clients
    are bounded: at most [serve].limit_concurrency connections, idle keep-alive connections closed after
    [serve].timeout_keep_alive_s, a request whose headers and body have not arrived within body_timeout_s, and
    at most [serve].limit_sending connections still sending (greencode/serve/slow_clients.py)."""
    import uvicorn

    from greencode.serve.slow_clients import protocol_with_header_timeout

    serve = app.state.config.serve
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=log_level in ("info", "debug"),
                            timeout_graceful_shutdown=5, lifespan="on", http=protocol_with_header_timeout(
                                serve.body_timeout_s, serve.limit_sending), limit_concurrency=serve.limit_concurrency,
                            timeout_keep_alive=serve.timeout_keep_alive_s)
    return uvicorn.Server(config)


def run_server(app, sock, log_level: str = "info") -> None:
    make_server(app, sock, log_level).run(sockets=[sock])
