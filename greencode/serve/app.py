"""`greencode serve`: an HTTP endpoint that llm-vscode / llm-ls can use as a Copilot.

Routes (TGI and HF Inference API shapes, see docs/architecture.md 'Editor endpoint'):

    POST /generate              {"inputs", "parameters"} -> {"generated_text", "details"}
    POST /generate_stream       the same, as server-sent events: one per token, the last with the text
    POST /  and /models/{model} HF Inference API: [{"generated_text", "details"}] ("stream": true for SSE)
                                (return_full_text defaults to false everywhere, as in TGI)
    GET  /health, GET /info     liveness and queue; the model's facts (greencode.info), policy, threshold, limits
    /v1/completions, /v1/chat/completions, /v1/models                         OpenAI (greencode/serve/openai.py)
    /api/generate, /api/chat, /api/tags, /api/ps, /api/show, /api/version     Ollama (greencode/serve/ollama.py)

Clients see the model as [serve].model_id ("greencode"); what it is stands beside it (/info, /v1/models,
/api/tags), by file name, never a local path.

Every route goes through the same guard, validation (schema.py), FIM plan (greencode/decoding/fim.py) and queue.
Every error is JSON in the route's protocol shape (`error_body`): TGI {"error", "error_type"} (what llm-ls
shows the user), OpenAI {"error": {"message", "type", "code"}}, Ollama {"error"}: 400 chat on a model without
a chat template, 401 bad token, 403 foreign Host or Origin (guard.py), 413 body, input or conversation too long,
422 malformed JSON / wrong types / bad policy / bad FIM prompt / bad messages, 429 queue full, never a traceback.
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
from greencode.serve.guard import GuardMiddleware, error_body, expected_body, public_message, undecodable_body
from greencode.serve.jobs import (ServerState, ServeError, StreamText, answer_text, details, generate_once, job_items,
                                  log, policy_threshold, response_headers, start_job, token_json)
from greencode.serve.queue import GenerationJob, GenerationQueue
from greencode.serve.schema import GenerateRequest, describe_errors, describe_protocol_errors

def _sse(data: dict) -> bytes:
    return f"data:{json.dumps(data)}\n\n".encode()


async def stream_events(state: ServerState, job: GenerationJob, body: GenerateRequest) -> AsyncIterator[bytes]:
    """TGI stream: one event per token; the last token's event also carries generated_text and details.

    Each token is held until the next arrives (or the stream ends), so the last one is known to be last.
    A token's `text` is what may be shown by then (StreamText: never what a stop rule cuts later), so the
    texts add up to generated_text. Leaving early (disconnect, server stop) cancels the generation."""
    shown, events, held = StreamText(job), [], None

    def event(token, text: str, summary=None) -> bytes:
        final = summary is not None
        return _sse({"index": token.index, "token": {**token_json(state, token), "text": text},
                     "generated_text": answer_text(body, summary) if final else None,
                     "details": details(state, job, summary, events, body) if final else None})

    async for kind, payload in job_items(state, job):
        if kind == "token":
            if held is not None:
                yield event(held, shown.add(held.text))
            held = payload
            events.append(payload)
        elif kind == "done":
            if held is not None:
                yield event(held, shown.add(held.text) + shown.finish(payload.text), payload)
        else:
            yield _sse(error_body(payload, "generation"))


def build_app(engine, config: Config, default_policy=None):
    """The ASGI app around one engine. `default_policy` (an ExitPolicy or its string form; default
    [engine].policy, agent:T falling back as greencode.runtime says) serves requests that name none."""
    from greencode.decoding.fim import model_fim_form
    from greencode.runtime import policy_or_fallback

    if not config.serve.model_id.strip():
        raise GreencodeError("[serve].model_id is empty; give the name clients use for this model, e.g. 'greencode'")
    default_policy, _ = policy_or_fallback(engine, default_policy or config.engine.policy)
    queue = GenerationQueue(engine, default_policy, config.serve.queue_limit)
    state = ServerState(engine, config, queue, time.time(), frozenset(engine.loaded.tokenizer.all_special_ids),
                        model_fim_form(engine.loaded.tokenizer), public_message(config.serve.model_id),
                        public_message(engine.loaded.name))

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
        expected = expected_body(path)
        message = (describe_protocol_errors(exc.errors(), protocol, expected) if protocol
                   else describe_errors(exc.errors(), expected))
        return JSONResponse(error_body(message, "validation", path), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        path = request.url.path
        if exc.status_code == 400:  # FastAPI could not decode the body at all: say why (its cause)
            message = f"{undecodable_body(exc.__cause__)}; send a JSON object {expected_body(path)}"
            return JSONResponse(error_body(message, "validation", path), 422)
        return JSONResponse(error_body(str(exc.detail), "http", path), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body(f"internal error ({type(exc).__name__})", "internal", request.url.path),
                            status_code=500)

    async def answer(body: GenerateRequest, request: Request, as_list: bool, stream: bool):
        if stream:
            job = await start_job(state, body, request)
            return StreamingResponse(stream_events(state, job, body), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-accel-buffering": "no",
                                              **response_headers(job)})
        result = await generate_once(state, body, request)
        warnings = result["details"]["warnings"]
        return JSONResponse([result] if as_list else result,
                            headers={"x-greencode-warning": "; ".join(warnings)} if warnings else None)

    @app.post("/generate", summary="TGI generate")
    async def generate(body: GenerateRequest, request: Request):
        return await answer(body, request, as_list=False, stream=False)

    @app.post("/generate_stream", summary="TGI generate, server-sent events")
    async def generate_stream(body: GenerateRequest, request: Request):
        return await answer(body, request, as_list=False, stream=True)

    @app.post("/", summary="HF Inference API")
    async def inference_api(body: GenerateRequest, request: Request):
        return await answer(body, request, as_list=True, stream=bool(body.stream))

    @app.post("/models/{model:path}", summary="HF Inference API (any model name: this server has one)")
    async def inference_api_model(model: str, body: GenerateRequest, request: Request):
        return await answer(body, request, as_list=True, stream=bool(body.stream))

    @app.get("/health")
    async def health():
        return {"status": "ok", "queue": queue.snapshot(), "uptime_s": round(time.time() - state.started, 1)}

    @app.get("/info")
    async def info():
        from greencode.info import model_facts

        policy, serve = queue.default_policy, config.serve
        facts = {key: public_message(value) if isinstance(value, str) else value
                 for key, value in model_facts(engine, config).items()}  # file names, never the server's paths
        return {
            "model_id": state.model_id, **facts, "model": state.model_description, "policy": policy.name,
            "threshold": policy_threshold(policy), "device": str(engine.device), "cpu_threads": torch.get_num_threads(),
            "max_new_tokens_cap": serve.max_new_tokens_cap, "max_input_chars": serve.max_input_chars,
            "max_body_bytes": serve.max_body_bytes, "queue_limit": serve.queue_limit,
            "max_context_tokens": engine.max_context_tokens, "auth": bool(serve.token), "version": "greencode-serve/1",
            "limit_concurrency": serve.limit_concurrency,
        }

    from greencode.serve import ollama, openai

    openai.add_routes(app, state)
    ollama.add_routes(app, state)

    guarded = GuardMiddleware(app, config.serve.token, config.serve.max_body_bytes, config.serve.body_timeout_s,
                              config.serve.allow_unauthenticated, config.serve.allowed_origins)
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
