"""`greencode serve`: an HTTP endpoint that llm-vscode / llm-ls can use as a Copilot.

Routes (TGI and HF Inference API shapes, see DESIGN.md 'Editor endpoint'):

    POST /generate              {"inputs", "parameters"} -> {"generated_text", "details"}
    POST /generate_stream       the same, as server-sent events: one per token, the last with the text
    POST /  and /models/{model} HF Inference API: [{"generated_text", "details"}] ("stream": true for SSE)
    GET  /health, GET /info     liveness and queue; model, exit points, policy, threshold, energy source
    /v1/completions, /v1/models                  OpenAI (greencode/serve/openai.py)
    /api/generate, /api/tags, /api/version       Ollama (greencode/serve/ollama.py)

Every route goes through the same guard, validation (schema.py), FIM plan (greencode/fim.py) and queue.
Every error is JSON in the route's protocol shape (`error_body`): TGI {"error", "error_type"} (what llm-ls
shows the user), OpenAI {"error": {"message", "type", "code"}}, Ollama {"error"}: 401 bad token, 413 body or
input too long, 422 malformed JSON / wrong types / bad policy / bad FIM prompt, 429 queue full, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from greencode.config import Config
from greencode.errors import GreencodeError
from greencode.serve.guard import GuardMiddleware, error_body, public_message
from greencode.serve.queue import GenerationJob, GenerationQueue, QueueFull
from greencode.fim import describe_fim
from greencode.serve.schema import GenerateRequest, describe_errors, describe_protocol_errors

log = logging.getLogger("greencode.serve")

FINISH_REASONS = {"length": "length", "eos": "eos_token", "stop": "stop_sequence", "eol": "stop_sequence",
                  "cancelled": "cancelled"}
DISCONNECT_POLL_S = 0.25


class ServeError(Exception):
    def __init__(self, status: int, message: str, error_type: str):
        message = public_message(message)  # a client sees file names, never the server's paths
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type


@dataclass
class ServerState:
    engine: Any
    config: Config
    queue: GenerationQueue
    started: float
    special_ids: frozenset
    fim_form: Any = None  # greencode.fim.FimForm when the model has FIM tokens


def _policy_threshold(policy) -> float | None:
    return getattr(policy, "threshold", None)


def _request_policy(state: ServerState, request: GenerateRequest):
    """This request's policy: the server default, or parameters.greencode's, with its threshold."""
    wanted = request.parameters.greencode
    policy = state.queue.default_policy
    try:
        if wanted is not None and wanted.policy is not None:
            policy = state.engine.make_policy(wanted.policy)
        if wanted is not None and wanted.threshold is not None:
            policy = policy.with_threshold(wanted.threshold)
    except GreencodeError as exc:
        raise ServeError(422, f"parameters.greencode: {exc}", "validation") from None
    return policy


def _fim_plan(state: ServerState, request: GenerateRequest):
    from greencode.fim import plan_completion

    try:
        return plan_completion(request.inputs, request.suffix, state.engine.loaded.tokenizer, state.fim_form,
                               state.engine.max_context_tokens)
    except GreencodeError as exc:
        raise ServeError(422, str(exc), "validation") from None


def _job_for(state: ServerState, request: GenerateRequest) -> GenerationJob:
    serve, defaults = state.config.serve, state.config.engine
    chars = len(request.inputs) + len(request.suffix or "")
    if chars > serve.max_input_chars:
        what = "inputs" if request.suffix is None else "the prompt and suffix together"
        raise ServeError(413, f"{what} has {chars} characters; the limit is {serve.max_input_chars}",
                         "payload_too_large")
    params = request.parameters
    temperature = defaults.temperature if params.temperature is None else params.temperature
    if params.do_sample is False:
        temperature = 0.0
    asked = params.max_new_tokens or defaults.max_new_tokens
    cap, why = (serve.max_new_tokens_cap, "[serve].max_new_tokens_cap")
    if state.engine.max_new_tokens_limit() < cap:
        cap, why = state.engine.max_new_tokens_limit(), "the model's position window"
    warnings = [f"max_new_tokens {asked} capped at {cap} ({why})"] if asked > cap else []
    options = {
        "max_new_tokens": min(asked, cap),
        "stop": params.stop or None,
        "temperature": temperature,
        "top_p": defaults.top_p if params.top_p is None else params.top_p,
        "seed": defaults.seed if params.seed is None else params.seed,
    }
    fim = _fim_plan(state, request)
    if fim.mode:
        options.update(stop=(options["stop"] or []) + fim.stop or None, stop_rule=fim.stop_rule)
    return GenerationJob(fim.prompt, options, _request_policy(state, request), asyncio.get_running_loop(), fim=fim,
                         warnings=warnings)


ERROR_TYPES = {422: "validation", 499: "cancelled", 503: "unavailable"}


def _raise_for(payload: tuple[int, str]) -> None:
    status, message = payload
    raise ServeError(status, message, ERROR_TYPES.get(status, "generation"))


@contextlib.asynccontextmanager
async def _cancel_on_disconnect(state: ServerState, job: GenerationJob, request):
    """While the body runs, poll the client every DISCONNECT_POLL_S and cancel the job once it has gone
    (tokens may arrive faster than that, so the check cannot wait for a quiet moment)."""
    async def watch():
        while True:
            await asyncio.sleep(DISCONNECT_POLL_S)
            if await request.is_disconnected():
                state.queue.cancel(job)
                return

    watcher = asyncio.ensure_future(watch())
    try:
        yield
    finally:
        watcher.cancel()


async def _start(state: ServerState, body: GenerateRequest, request) -> GenerationJob:
    """Queue the request and wait until generation has started (or failed before its first token)."""
    job = _job_for(state, body)
    try:
        state.queue.submit(job)
    except QueueFull as exc:
        raise ServeError(429, str(exc), "overloaded") from None
    async with _cancel_on_disconnect(state, job, request):
        kind, payload = await job.items.get()
    if kind == "error":
        _raise_for(payload)
    return job


def _token_json(state: ServerState, event) -> dict:
    return {"id": event.token_id, "text": event.text, "logprob": None, "special": event.token_id in state.special_ids,
            "exit_layer": event.exit_layer, "joules": event.joules}


def _details(state: ServerState, job: GenerationJob, summary, events: list, params) -> dict:
    sampled = job.options["temperature"] > 0
    return {
        "finish_reason": FINISH_REASONS.get(summary.stop_reason, summary.stop_reason),
        "generated_tokens": summary.tokens,
        "seed": job.options["seed"] if sampled else None,
        "tokens": [_token_json(state, event) for event in events],
        "exit_layers": list(summary.exit_layers),
        "num_layers": state.engine.num_layers,
        "mean_exit_layer": summary.mean_exit_layer,
        "layers_skipped_frac": summary.layers_skipped_frac,
        "joules": summary.joules,
        "full_depth_joules": summary.full_depth_joules,
        "joules_saved": summary.joules_saved,
        "energy_source": summary.energy_source,
        "policy": job.policy.name,  # the first token comes from the prefill, at full depth
        "prompt_tokens": summary.prompt_tokens,
        "dropped_prompt_tokens": summary.dropped_prompt_tokens,
        "reused_prompt_tokens": summary.reused_prompt_tokens,  # their prefill came from the prefix cache
        "prefill_seconds": summary.prefill_seconds,
        "seconds": summary.seconds,
        "ignored_parameters": params.ignored,
        "max_new_tokens": job.options["max_new_tokens"],
        "warnings": list(job.warnings),
        **({"fim": {"mode": job.fim.mode, "request": job.fim.source, "note": job.fim.note}}
           if job.fim is not None and job.fim.mode else {}),
    }


def _text(body: GenerateRequest, summary, full_text_default: bool) -> str:
    full = body.parameters.return_full_text
    return body.inputs + summary.text if (full_text_default if full is None else full) else summary.text


async def collect(state: ServerState, job: GenerationJob, request) -> tuple:
    """Wait for a started job's tokens and summary (cancelled if the client goes away): (summary, events)."""
    events = []
    async with _cancel_on_disconnect(state, job, request):
        while True:
            kind, payload = await job.items.get()
            if kind == "token":
                events.append(payload)
            elif kind == "done":
                return payload, events
            else:
                _raise_for(payload)


async def generate_once(state: ServerState, body: GenerateRequest, request, full_text_default: bool) -> dict:
    job = await _start(state, body, request)
    summary, events = await collect(state, job, request)
    return {"generated_text": _text(body, summary, full_text_default),
            "details": _details(state, job, summary, events, body.parameters)}


def validated(state: ServerState, body: dict, protocol: str) -> GenerateRequest:
    """A protocol's body as the shared GenerateRequest, checked by the one validation (errors in its names)."""
    from pydantic import ValidationError

    try:
        return GenerateRequest.model_validate(body)
    except ValidationError as exc:
        raise ServeError(422, describe_protocol_errors(exc.errors(), protocol), "validation") from None


def details(state: ServerState, job: GenerationJob, summary, events: list, body: GenerateRequest) -> dict:
    return _details(state, job, summary, events, body.parameters)


def fim_headers(job: GenerationJob) -> dict:
    """Says how a suffix or FIM prompt was used (a suffix the model cannot use is answered anyway)."""
    if job.fim is None or not job.fim.mode:
        return {}
    return {"x-greencode-fim": f"{job.fim.mode}; request={job.fim.source}"}


def response_headers(job: GenerationJob) -> dict:
    """Every route's headers about how the answer differs from the request: FIM use, and each warning
    (e.g. a capped max_new_tokens), as `details.warnings` says too."""
    return {**fim_headers(job), **({"x-greencode-warning": "; ".join(job.warnings)} if job.warnings else {})}


class StreamText:
    """What a stream may show of the text so far: never what a stop sequence or the suffix rule will cut."""

    def __init__(self, job: GenerationJob):
        from greencode.fim import stream_safe_length

        self._safe = stream_safe_length
        self.stop, self.rule = job.options.get("stop") or [], job.options.get("stop_rule")
        self.text, self.sent = "", 0

    def add(self, piece: str) -> str:
        self.text += piece
        safe = self._safe(self.text, self.stop, self.rule)
        out = self.text[self.sent:safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return out

    def finish(self, final_text: str) -> str:
        rest = final_text[self.sent:] if final_text.startswith(self.text[:self.sent]) else ""
        self.sent = len(final_text)
        return rest


async def job_items(state: ServerState, job: GenerationJob) -> AsyncIterator[tuple]:
    """A started job's ("token", event) items, then ("done", summary) or ("error", message); leaving
    early (the client went away, the server stops) cancels the generation."""
    finished = False
    try:
        while True:
            kind, payload = await job.items.get()
            if kind == "token":
                yield kind, payload
                continue
            finished = True
            yield (kind, payload) if kind == "done" else ("error", payload[1])
            return
    finally:
        if not finished:
            state.queue.cancel(job)


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
    from greencode.fim import model_fim_form
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
        if exc.status_code == 400:  # FastAPI could not decode the body at all (e.g. not UTF-8)
            return JSONResponse(error_body("the body is not valid JSON (it must be UTF-8 text)", "validation", path),
                                422)
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
    [serve].timeout_keep_alive_s, and a connection whose request headers never arrive after body_timeout_s."""
    import uvicorn

    from greencode.serve.slow_clients import protocol_with_header_timeout

    serve = app.state.config.serve
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=log_level in ("info", "debug"),
                            timeout_graceful_shutdown=5, lifespan="on", http=protocol_with_header_timeout(
                                serve.body_timeout_s), limit_concurrency=serve.limit_concurrency,
                            timeout_keep_alive=serve.timeout_keep_alive_s)
    return uvicorn.Server(config)


def run_server(app, sock, log_level: str = "info") -> None:
    make_server(app, sock, log_level).run(sockets=[sock])
