"""OpenAI-compatible routes: `POST /v1/completions` (legacy completions, with `suffix`), `POST
/v1/chat/completions` (chat, through the model's chat template) and `GET /v1/models`.

For Continue (autocomplete and chat, the CLI too), Tabby's and llm-ls's `openai` backends, Twinny, litellm and
scripts using the `openai` package. The body is turned into the shared GenerateRequest, so it is checked, planned
(FIM) and queued exactly as the TGI routes are. greencode's figures ride along in a `greencode` field that
standard clients ignore: the TGI `details` on the answer and the final chunk, and each token's exit layer and
joules on every chunk.
"""

from __future__ import annotations

import json
import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from greencode.serve.chat import ChatCompletionRequest, render_conversation
from greencode.serve.jobs import (ServerState, StreamText, collect, details, job_items, response_headers, start_job,
                                  validated)
from greencode.serve.schema import CompletionRequest

FINISH = {"length": "length"}  # everything else (eos, stop sequence, suffix, end of line) is "stop"
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _usage(summary) -> dict:
    return {"prompt_tokens": summary.prompt_tokens, "completion_tokens": summary.tokens,
            "total_tokens": summary.prompt_tokens + summary.tokens}


def token_figures(event) -> dict:
    """One token's figures on a stream chunk; its joules_saved may be negative (a token that cost more than full
    depth would), so the chunks add up to the final figure."""
    return {"token_id": event.token_id, "exit_layer": event.exit_layer, "num_layers": event.num_layers,
            "joules": event.joules, "joules_saved": event.full_depth_joules - event.joules,
            "energy_source": event.energy_source}


def _completion_choice(text: str, finish_reason, first: bool) -> dict:
    return {"text": text, "index": 0, "finish_reason": finish_reason, "logprobs": None}


def _chat_choice(text: str, finish_reason, first: bool) -> dict:
    delta = {"content": text} if text or finish_reason is None else {}  # the last chunk's delta may be empty
    if first:
        delta = {"role": "assistant", **delta}
    return {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}


def _chat_message(text: str, finish_reason) -> dict:
    return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
            "finish_reason": finish_reason}


def _chunk(meta: dict, choice: dict, greencode: dict, usage=None) -> bytes:
    body = {**meta, "choices": [choice], "greencode": greencode}
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


async def _stream(state: ServerState, job, generate, meta: dict, choice):
    """Server-sent chunks: one per token (text held back while a stop rule may still cut it), then the last
    with the finish reason, usage and the completion's figures; `choice` shapes a chunk's choice."""
    shown = StreamText(job)
    events = []
    async for kind, payload in job_items(state, job):
        if kind == "token":
            events.append(payload)
            yield _chunk(meta, choice(shown.add(payload.text), None, len(events) == 1), token_figures(payload))
        elif kind == "done":
            finish = FINISH.get(payload.stop_reason, "stop")
            yield _chunk(meta, choice(shown.finish(payload.text), finish, not events),
                         details(state, job, payload, events, generate), _usage(payload))
        else:
            error = {"message": payload, "type": "server_error", "param": None, "code": "generation"}
            yield f"data: {json.dumps({'error': error})}\n\n".encode()
    yield b"data: [DONE]\n\n"


def add_routes(app, state: ServerState) -> None:
    def meta(prefix: str, kind: str) -> dict:
        return {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()),
                "model": state.model_id}

    async def answer(request: Request, job, generate, stream: bool, prefix: str, kind: str, chunk_kind: str,
                     chunk_choice, final_choice):
        """Server-sent chunks (`chunk_choice` shapes each choice) when `stream`, else one JSON body whose choice
        is `final_choice(text, finish_reason)`: the same figures either way."""
        headers = response_headers(job)
        if stream:
            return StreamingResponse(_stream(state, job, generate, meta(prefix, chunk_kind), chunk_choice),
                                     media_type="text/event-stream", headers={**STREAM_HEADERS, **headers})
        summary, events = await collect(state, job, request)
        choice = final_choice(summary.text, FINISH.get(summary.stop_reason, "stop"))
        body = {**meta(prefix, kind), "choices": [choice], "usage": _usage(summary),
                "greencode": details(state, job, summary, events, generate)}
        return JSONResponse(body, headers=headers)

    @app.post("/v1/completions", summary="OpenAI completions (prompt + suffix)")
    async def completions(body: CompletionRequest, request: Request):
        generate = validated(state, body.to_generate(), "openai")
        job = await start_job(state, generate, request)
        return await answer(request, job, generate, body.stream, "cmpl", "text_completion", "text_completion",
                            _completion_choice, lambda text, finish: _completion_choice(text, finish, True))

    @app.post("/v1/chat/completions", summary="OpenAI chat completions (messages, through the chat template)")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        prompt, ids = render_conversation(state, body.messages)
        generate = validated(state, body.to_generate(prompt, state.config.serve.max_new_tokens_cap), "openai")
        job = await start_job(state, generate, request, prompt_ids=ids)
        return await answer(request, job, generate, body.stream, "chatcmpl", "chat.completion",
                            "chat.completion.chunk", _chat_choice, _chat_message)

    @app.get("/v1/models", summary="OpenAI models: the one this server serves")
    async def models():
        return {"object": "list", "data": [{"id": state.model_id, "object": "model", "created": int(state.started),
                                            "owned_by": "greencode", "description": state.model_description}]}
