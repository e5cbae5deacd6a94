"""OpenAI-compatible routes: `POST /v1/completions` (legacy completions, with `suffix`) and `GET /v1/models`.

For Continue, Tabby's and llm-ls's `openai` backends, Twinny, and scripts using the `openai` package. The
body is turned into the shared GenerateRequest, so it is checked, planned (FIM) and queued exactly as the
TGI routes are. greencode's figures ride along in a `greencode` field that standard clients ignore: the
TGI `details` on the answer and the final chunk, and each token's exit layer and joules on every chunk.
"""

from __future__ import annotations

import json
import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from greencode.serve.jobs import (ServerState, StreamText, _start, collect, details, job_items, response_headers,
                                   validated)
from greencode.serve.schema import CompletionRequest

FINISH = {"length": "length"}  # everything else (eos, stop sequence, suffix, end of line) is "stop"


def _usage(summary) -> dict:
    return {"prompt_tokens": summary.prompt_tokens, "completion_tokens": summary.tokens,
            "total_tokens": summary.prompt_tokens + summary.tokens}


def token_figures(event) -> dict:
    return {"token_id": event.token_id, "exit_layer": event.exit_layer, "num_layers": event.num_layers,
            "joules": event.joules, "joules_saved": max(0.0, event.full_depth_joules - event.joules),
            "energy_source": event.energy_source}


def _chunk(meta: dict, text: str, finish_reason, greencode: dict, usage=None) -> bytes:
    body = {**meta, "choices": [{"text": text, "index": 0, "finish_reason": finish_reason, "logprobs": None}],
            "greencode": greencode}
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


async def _stream(state: ServerState, job, generate, meta: dict):
    shown = StreamText(job)
    events = []
    async for kind, payload in job_items(state, job):
        if kind == "token":
            events.append(payload)
            yield _chunk(meta, shown.add(payload.text), None, token_figures(payload))
        elif kind == "done":
            yield _chunk(meta, shown.finish(payload.text), FINISH.get(payload.stop_reason, "stop"),
                         details(state, job, payload, events, generate), _usage(payload))
        else:
            error = {"message": payload, "type": "server_error", "param": None, "code": "generation"}
            yield f"data: {json.dumps({'error': error})}\n\n".encode()
    yield b"data: [DONE]\n\n"


def add_routes(app, state: ServerState) -> None:
    def meta() -> dict:
        return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": state.engine.loaded.name}

    @app.post("/v1/completions", summary="OpenAI completions (prompt + suffix)")
    async def completions(body: CompletionRequest, request: Request):
        generate = validated(state, body.to_generate(), "openai")
        job = await _start(state, generate, request)
        headers = response_headers(job)
        if body.stream:
            return StreamingResponse(_stream(state, job, generate, meta()), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-accel-buffering": "no", **headers})
        summary, events = await collect(state, job, request)
        answer = {**meta(), "choices": [{"text": summary.text, "index": 0, "logprobs": None,
                                         "finish_reason": FINISH.get(summary.stop_reason, "stop")}],
                  "usage": _usage(summary), "greencode": details(state, job, summary, events, generate)}
        return JSONResponse(answer, headers=headers)

    @app.get("/v1/models", summary="OpenAI models: the one this server serves")
    async def models():
        return {"object": "list", "data": [{"id": state.engine.loaded.name, "object": "model",
                                            "created": int(state.started), "owned_by": "greencode"}]}
