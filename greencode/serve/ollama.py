"""Ollama-compatible routes: `POST /api/generate` and `POST /api/chat` (NDJSON streams by default), `GET
/api/tags`, `GET /api/ps`, `GET /api/version` and `POST /api/show`, so Ollama clients that probe the server
(Open WebUI, Continue, Twinny) accept it.

For llm-ls's `ollama` backend, Continue, Twinny, Open WebUI, litellm's `ollama/` provider and the `ollama`
package. The body becomes the shared GenerateRequest (same validation, FIM plan and queue as every route);
`options.num_predict` -1 or -2 means "as many as the server allows". greencode's figures ride along in a
`greencode` field on each line.
"""

from __future__ import annotations

import datetime
import json
import time

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from greencode.serve.chat import OllamaChatRequest, render_conversation
from greencode.serve.jobs import (ServerState, StreamText, collect, details, job_items, response_headers, start_job,
                                  validated)
from greencode.serve.openai import token_figures
from greencode.serve.schema import OllamaGenerateRequest

COMPATIBLE_VERSION = "0.6.0"  # the Ollama API version these routes follow


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _generated(text: str) -> dict:
    return {"response": text}


def _said(text: str) -> dict:
    return {"message": {"role": "assistant", "content": text}}


def _final(state: ServerState, job, generate, summary, events, started: float, text: dict) -> dict:
    ns = lambda seconds: int(seconds * 1e9)  # noqa: E731
    return {"model": state.model_id, "created_at": _now(), **text, "done": True,
            "done_reason": "length" if summary.stop_reason == "length" else "stop",
            "total_duration": ns(time.perf_counter() - started), "load_duration": 0,
            "prompt_eval_count": summary.prompt_tokens, "prompt_eval_duration": ns(summary.prefill_seconds),
            "eval_count": summary.tokens, "eval_duration": ns(summary.seconds),
            "greencode": details(state, job, summary, events, generate)}


async def _lines(state: ServerState, job, generate, started: float, shape):
    """NDJSON: a line per token (text held back while a stop rule may still cut it), then the final line;
    `shape` puts the text where the route wants it (`response`, or an assistant `message`)."""
    shown = StreamText(job)
    events = []
    async for kind, payload in job_items(state, job):
        if kind == "token":
            events.append(payload)
            line = {"model": state.model_id, "created_at": _now(), **shape(shown.add(payload.text)), "done": False,
                    "greencode": token_figures(payload)}
        elif kind == "done":
            line = _final(state, job, generate, payload, events, started, shape(shown.finish(payload.text)))
        else:
            line = {"error": payload}
        yield (json.dumps(line) + "\n").encode()


async def _answer(state: ServerState, request, body, shared, started: float, shape, prompt_ids=None):
    job = await start_job(state, shared, request, prompt_ids=prompt_ids)
    headers = response_headers(job)
    if body.stream:
        return StreamingResponse(_lines(state, job, shared, started, shape), media_type="application/x-ndjson",
                                 headers=headers)
    summary, events = await collect(state, job, request)
    return JSONResponse(_final(state, job, shared, summary, events, started, shape(summary.text)), headers=headers)


def _model_details(state: ServerState) -> dict:
    loaded = state.engine.loaded
    parameters = sum(p.numel() for p in loaded.model.parameters())
    return {"format": "safetensors", "family": loaded.adapter.arch, "families": [loaded.adapter.arch],
            "parameter_size": f"{parameters / 1e6:.0f}M", "quantization_level": str(loaded.model.dtype).split(".")[-1]}


def _model_entry(state: ServerState) -> dict:
    """The one model, as /api/tags and /api/ps list it: the short name, with the model it is beside it."""
    loaded = state.engine.loaded
    size = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    return {"name": state.model_id, "model": state.model_id, "description": state.model_description, "size": size,
            "digest": "", "details": _model_details(state)}


def add_routes(app, state: ServerState) -> None:
    @app.post("/api/generate", summary="Ollama generate (prompt + suffix; NDJSON stream unless stream=false)")
    async def generate(body: OllamaGenerateRequest, request: Request):
        started = time.perf_counter()
        if not body.prompt and not body.suffix:  # Ollama answers an empty prompt by loading the model
            return {"model": state.model_id, "created_at": _now(), "response": "", "done": True,
                    "done_reason": "load"}
        shared = validated(state, body.to_generate(state.config.serve.max_new_tokens_cap), "ollama")
        return await _answer(state, request, body, shared, started, _generated)

    @app.post("/api/chat", summary="Ollama chat (messages, through the chat template; NDJSON unless stream=false)")
    async def chat(body: OllamaChatRequest, request: Request):
        started = time.perf_counter()
        prompt, ids = render_conversation(state, body.messages)
        shared = validated(state, body.to_generate(prompt, state.config.serve.max_new_tokens_cap), "ollama")
        return await _answer(state, request, body, shared, started, _said, prompt_ids=ids)

    @app.get("/api/tags", summary="Ollama: the models this server has (one)")
    async def tags():
        modified = datetime.datetime.fromtimestamp(state.started, datetime.timezone.utc).isoformat()
        return {"models": [{**_model_entry(state), "modified_at": modified}]}

    @app.get("/api/ps", summary="Ollama: the models loaded now (the one, always loaded)")
    async def ps():
        entry = _model_entry(state)
        return {"models": [{**entry, "expires_at": "9999-12-31T23:59:59Z", "size_vram": 0}]}

    @app.get("/api/version", summary="Ollama: the API version these routes follow")
    async def version():
        return {"version": COMPATIBLE_VERSION}

    @app.post("/api/show", summary="Ollama: facts about the model (any name: this server has one)")
    async def show():
        loaded = state.engine.loaded
        capabilities = ["completion"] + (["insert"] if state.fim_form is not None else [])
        return {"modelfile": "", "parameters": "", "template": "{{ .Prompt }}", "details": _model_details(state),
                "model_info": {"general.architecture": loaded.adapter.arch,
                               f"{loaded.adapter.arch}.context_length": state.engine.max_context_tokens},
                "capabilities": capabilities}
