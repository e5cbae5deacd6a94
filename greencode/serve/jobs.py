"""What every protocol of `greencode serve` shares (TGI, HF Inference API, OpenAI, Ollama): one request
becomes one job (its policy, FIM plan and options, validated once), queued, streamed back, and described
with the same figures. Routes live in app.py (TGI and HF), openai.py and ollama.py; they all call these:
`validated` -> `start_job` -> `collect` (one answer) or `job_items` + `StreamText` (a stream), then `details`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator

from greencode.config import Config
from greencode.errors import GreencodeError
from greencode.serve.guard import public_message
from greencode.serve.queue import GenerationJob, GenerationQueue, QueueFull
from greencode.serve.schema import GenerateRequest, describe_protocol_errors

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
    fim_form: Any = None  # greencode.decoding.fim.FimForm when the model has FIM tokens
    model_id: str = "greencode"  # the public name every route answers with ([serve].model_id)
    model_description: str = ""  # the model it serves, in words (file names, never a local path)


def policy_threshold(policy) -> float | None:
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
    from greencode.decoding.fim import plan_completion

    try:
        return plan_completion(request.inputs, request.suffix, state.engine.loaded.tokenizer, state.fim_form,
                               state.engine.max_context_tokens)
    except GreencodeError as exc:
        raise ServeError(422, str(exc), "validation") from None


def _job_for(state: ServerState, request: GenerateRequest, prompt_ids: list[int] | None = None) -> GenerationJob:
    """The job of a validated request; `prompt_ids` (a chat conversation, already templated) skips the FIM plan."""
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
    if prompt_ids is not None:  # a conversation: already templated, never cut, no FIM
        check_window(state, len(prompt_ids), options["max_new_tokens"])
        return GenerationJob(prompt_ids, options, _request_policy(state, request), asyncio.get_running_loop(),
                             warnings=warnings)
    fim = _fim_plan(state, request)
    if fim.mode:
        options.update(stop=(options["stop"] or []) + fim.stop or None, stop_rule=fim.stop_rule)
    return GenerationJob(fim.prompt, options, _request_policy(state, request), asyncio.get_running_loop(), fim=fim,
                         warnings=warnings)


def check_window(state: ServerState, prompt_tokens: int, max_new_tokens: int) -> None:
    """A conversation is not cut to fit (its start holds the system prompt and the template): too long is a 413."""
    limit = state.engine.context_limit(max_new_tokens)
    if prompt_tokens > limit:
        raise ServeError(413, f"the conversation has {prompt_tokens} tokens; this server's window holds {limit} "
                         "([engine].max_context_tokens, less the tokens to generate): drop earlier messages",
                         "payload_too_large")


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


async def start_job(state: ServerState, body: GenerateRequest, request,
                    prompt_ids: list[int] | None = None) -> GenerationJob:
    """Queue the request and wait until generation has started (or failed before its first token)."""
    job = _job_for(state, body, prompt_ids)
    try:
        state.queue.submit(job)
    except QueueFull as exc:
        raise ServeError(429, str(exc), "overloaded") from None
    async with _cancel_on_disconnect(state, job, request):
        kind, payload = await job.items.get()
    if kind == "error":
        _raise_for(payload)
    return job


def token_json(state: ServerState, event) -> dict:
    return {"id": event.token_id, "text": event.text, "logprob": None, "special": event.token_id in state.special_ids,
            "exit_layer": event.exit_layer, "joules": event.joules}


def details(state: ServerState, job: GenerationJob, summary, events: list, body: GenerateRequest) -> dict:
    """The figures of a finished job, the same on every route (TGI `details`, the `greencode` field elsewhere)."""
    params = body.parameters
    sampled = job.options["temperature"] > 0
    return {
        "finish_reason": FINISH_REASONS.get(summary.stop_reason, summary.stop_reason),
        "generated_tokens": summary.tokens,
        "seed": job.options["seed"] if sampled else None,
        "tokens": [token_json(state, event) for event in events],
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


def answer_text(body: GenerateRequest, summary) -> str:
    """The completion, after the prompt only when `return_full_text` asks for it (TGI's default is false)."""
    return body.inputs + summary.text if body.parameters.return_full_text else summary.text


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


async def generate_once(state: ServerState, body: GenerateRequest, request) -> dict:
    job = await start_job(state, body, request)
    summary, events = await collect(state, job, request)
    return {"generated_text": answer_text(body, summary), "details": details(state, job, summary, events, body)}


def validated(state: ServerState, body: dict, protocol: str) -> GenerateRequest:
    """A protocol's body as the shared GenerateRequest, checked by the one validation (errors in its names)."""
    from pydantic import ValidationError

    try:
        return GenerateRequest.model_validate(body)
    except ValidationError as exc:
        raise ServeError(422, describe_protocol_errors(exc.errors(), protocol), "validation") from None


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
        from greencode.decoding.fim import stream_safe_length

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
