"""Ollama-compatible routes: `POST /api/generate` (NDJSON stream by default), `GET /api/tags`,
`GET /api/version` and `POST /api/show`, so Ollama clients that probe the server accept it.

For llm-ls's `ollama` backend, Continue, Twinny and the `ollama` package. The body becomes the shared
GenerateRequest (same validation, FIM plan and queue as every route); `options.num_predict` -1 or -2 means
"as many as the server allows". greencode's figures ride along in a `greencode` field on each line.
"""

from __future__ import annotations

import datetime
import json
import time

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from greencode.serve.jobs import (ServerState, StreamText, _start, collect, details, job_items, response_headers,
                                   validated)
from greencode.serve.openai import token_figures
from greencode.serve.schema import OllamaGenerateRequest

COMPATIBLE_VERSION = "0.6.0"  # the Ollama API version these routes follow


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _final(state: ServerState, job, generate, summary, events, started: float, text: str) -> dict:
    ns = lambda seconds: int(seconds * 1e9)  # noqa: E731
    return {"model": state.engine.loaded.name, "created_at": _now(), "response": text, "done": True,
            "done_reason": "length" if summary.stop_reason == "length" else "stop",
            "total_duration": ns(time.perf_counter() - started), "load_duration": 0,
            "prompt_eval_count": summary.prompt_tokens, "prompt_eval_duration": ns(summary.prefill_seconds),
            "eval_count": summary.tokens, "eval_duration": ns(summary.seconds),
            "greencode": details(state, job, summary, events, generate)}


async def _lines(state: ServerState, job, generate, started: float):
    shown = StreamText(job)
    events = []
    async for kind, payload in job_items(state, job):
        if kind == "token":
            events.append(payload)
            line = {"model": state.engine.loaded.name, "created_at": _now(), "response": shown.add(payload.text),
                    "done": False, "greencode": token_figures(payload)}
        elif kind == "done":
            line = _final(state, job, generate, payload, events, started, shown.finish(payload.text))
        else:
            line = {"error": payload}
        yield (json.dumps(line) + "\n").encode()


def _model_details(state: ServerState) -> dict:
    loaded = state.engine.loaded
    parameters = sum(p.numel() for p in loaded.model.parameters())
    return {"format": "safetensors", "family": loaded.adapter.arch, "families": [loaded.adapter.arch],
            "parameter_size": f"{parameters / 1e6:.0f}M", "quantization_level": str(loaded.model.dtype).split(".")[-1]}


def add_routes(app, state: ServerState) -> None:
    @app.post("/api/generate", summary="Ollama generate (prompt + suffix; NDJSON stream unless stream=false)")
    async def generate(body: OllamaGenerateRequest, request: Request):
        started = time.perf_counter()
        if not body.prompt and not body.suffix:  # Ollama answers an empty prompt by loading the model
            return {"model": state.engine.loaded.name, "created_at": _now(), "response": "", "done": True,
                    "done_reason": "load"}
        shared = validated(state, body.to_generate(state.config.serve.max_new_tokens_cap), "ollama")
        job = await _start(state, shared, request)
        headers = response_headers(job)
        if body.stream:
            return StreamingResponse(_lines(state, job, shared, started), media_type="application/x-ndjson",
                                     headers=headers)
        summary, events = await collect(state, job, request)
        return JSONResponse(_final(state, job, shared, summary, events, started, summary.text), headers=headers)

    @app.get("/api/tags", summary="Ollama: the models this server has (one)")
    async def tags():
        loaded = state.engine.loaded
        modified = datetime.datetime.fromtimestamp(state.started, datetime.timezone.utc).isoformat()
        size = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        return {"models": [{"name": loaded.name, "model": loaded.name, "modified_at": modified, "size": size,
                            "digest": "", "details": _model_details(state)}]}

    @app.get("/api/version", summary="Ollama: the API version these routes follow")
    async def version():
        return {"version": COMPATIBLE_VERSION}

    @app.post("/api/show", summary="Ollama: facts about the model (any name: this server has one)")
    async def show():
        loaded = state.engine.loaded
        return {"modelfile": "", "parameters": "", "template": "{{ .Prompt }}", "details": _model_details(state),
                "model_info": {"general.architecture": loaded.adapter.arch,
                               f"{loaded.adapter.arch}.context_length": state.engine.max_context_tokens},
                "capabilities": ["completion", "insert"] if state.fim_form is not None else ["completion"]}
