"""Hypothesis over the request schemas against a real server (TGI / HF routes, OpenAI /v1/completions,
Ollama /api/generate): every answer is 200, 413 or 422 with a JSON error, never a 500 (or a dropped
connection, or an error inside a 200 stream)."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from greencode.decoding.engine import EarlyExitEngine
from greencode.model.load import load_model
from tests.greencode.serve.serve_server import running_server, serve_config, sse_events

ROUTES = ["/generate", "/generate_stream", "/", "/models/any/name"]

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                              max_size=3), max_leaves=8)
policies = st.sampled_from(["full", "fixed:4", "fixed:5", "fixed:x", "confidence:0.5", "confidence:2", "entropy:1",
                            "entropy:nan", "agent:0.9", "bogus", "", "fixed:" + "9" * 70])


def _requests(loose):
    """Request bodies; loose=True lets any field take any JSON value, else fields keep their types
    (so many requests are valid and generate) while their values stray out of range."""
    def field(typed):
        return typed | anything if loose else typed

    greencode = st.fixed_dictionaries({}, optional={"policy": field(policies), "threshold": field(st.floats()),
                                                    **({"typo": anything} if loose else {})})
    parameters = st.fixed_dictionaries({}, optional={
        "max_new_tokens": field(st.integers(-3, 2**70)),
        "temperature": field(st.floats(-1, 3) | st.sampled_from([0.0, 1e-40, 1e300])),
        "top_p": field(st.floats(-1, 2)), "do_sample": field(st.booleans()), "seed": field(st.integers(-3, 2**65)),
        "stop": field(st.lists(st.text(max_size=300), max_size=10)), "return_full_text": field(st.booleans()),
        "greencode": field(greencode), "top_k": anything,
    })
    return st.fixed_dictionaries({"inputs": field(st.text(max_size=150))}, optional={
        "parameters": field(parameters | st.fixed_dictionaries({"parameters": parameters})),
        "stream": field(st.booleans()),
    })


bodies = _requests(loose=False) | _requests(loose=True) | anything


def _openai_requests(loose):
    """/v1/completions bodies (OpenAI legacy completions), typed or loose like _requests."""
    def field(typed):
        return typed | anything if loose else typed

    greencode = st.fixed_dictionaries({}, optional={"policy": field(policies), "threshold": field(st.floats())})
    return st.fixed_dictionaries({"prompt": field(st.text(max_size=150) | st.lists(st.text(max_size=40), max_size=3))},
                                 optional={
        "model": field(st.text(max_size=12)), "suffix": field(st.text(max_size=60)),
        "max_tokens": field(st.integers(-3, 2**70)), "temperature": field(st.floats(-1, 3) | st.just(1e-40)),
        "top_p": field(st.floats(-1, 2) | st.just(1e-300)), "stop": field(st.text(max_size=8) | st.lists(st.text(max_size=8),
                                                                                                       max_size=5)),
        "stream": field(st.booleans()), "seed": field(st.integers(-3, 2**65)), "n": field(st.integers(-1, 3)),
        "echo": field(st.booleans()), "logprobs": field(st.integers(-1, 6)), "greencode": field(greencode),
        "frequency_penalty": anything})


def _ollama_requests(loose):
    """/api/generate bodies (Ollama), typed or loose like _requests."""
    def field(typed):
        return typed | anything if loose else typed

    options = st.fixed_dictionaries({}, optional={
        "num_predict": field(st.integers(-3, 2**70)), "temperature": field(st.floats(-1, 3)),
        "top_p": field(st.floats(-1, 2) | st.just(1e-300)), "stop": field(st.lists(st.text(max_size=8), max_size=5)),
        "seed": field(st.integers(-3, 2**65)), "top_k": anything})
    return st.fixed_dictionaries({}, optional={
        "model": field(st.text(max_size=12)), "prompt": field(st.text(max_size=150)),
        "suffix": field(st.text(max_size=60)), "raw": field(st.booleans()), "stream": field(st.booleans()),
        "options": field(options), "keep_alive": anything})


PROTOCOL_BODIES = {"/v1/completions": _openai_requests(loose=False) | _openai_requests(loose=True) | anything,
                   "/api/generate": _ollama_requests(loose=False) | _ollama_requests(loose=True) | anything}


@pytest.fixture(scope="module")
def fuzz_server():
    engine = EarlyExitEngine(load_model("tiny-random-llama", device="cpu"))
    config = serve_config(max_new_tokens_cap=2, max_input_chars=120, max_body_bytes=3000)
    with running_server(engine, config) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        yield client


def _check(response: httpx.Response) -> None:
    event(f"status {response.status_code}")
    assert response.status_code in (200, 413, 422), (response.status_code, response.text)
    if response.status_code != 200:
        error = response.json()
        assert isinstance(error["error"], str) and error["error"] and "Traceback" not in error["error"]
        return
    if response.headers["content-type"].startswith("text/event-stream"):
        events = sse_events(response.text.splitlines())
        assert events and "error" not in events[-1] and isinstance(events[-1]["generated_text"], str)
        assert len(events) == events[-1]["details"]["generated_tokens"]
    else:
        body = response.json()
        first = body[0] if isinstance(body, list) else body
        assert isinstance(first["generated_text"], str) and first["details"]["generated_tokens"] <= 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=bodies)
def test_fuzzed_json_bodies_never_fail_the_server(fuzz_server, route, body):
    _check(fuzz_server.post(route, content=json.dumps(body).encode(), headers={"content-type": "application/json"}))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), raw=st.binary(max_size=200),
       content_type=st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded"]))
def test_fuzzed_raw_bodies_never_fail_the_server(fuzz_server, route, raw, content_type):
    headers = {"content-type": content_type} if content_type else {}
    _check(fuzz_server.post(route, content=raw, headers=headers))


def _check_protocol(route: str, response: httpx.Response) -> None:
    """OpenAI and Ollama answers: 200, 413 or 422 in the route's own error shape, never a 500 or an error
    inside a 200 stream."""
    event(f"{route} status {response.status_code}")
    assert response.status_code in (200, 413, 422), (response.status_code, response.text)
    if response.status_code != 200:
        error = response.json()["error"]
        message = error["message"] if route.startswith("/v1/") else error
        assert isinstance(message, str) and message and "Traceback" not in message
        return
    kind = response.headers["content-type"]
    if kind.startswith("text/event-stream"):  # OpenAI stream: data: {...} ... data: [DONE]
        lines = [line[len("data:"):].strip() for line in response.text.splitlines() if line.startswith("data:")]
        assert lines and lines[-1] == "[DONE]"
        assert all("error" not in json.loads(line) for line in lines[:-1])
    elif kind.startswith("application/x-ndjson"):  # Ollama stream: one JSON object a line, the last done
        objects = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        assert objects and objects[-1]["done"] is True and all("error" not in item for item in objects)
    else:
        body = response.json()
        text = body["choices"][0]["text"] if route.startswith("/v1/") else body["response"]
        assert isinstance(text, str)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), route=st.sampled_from(sorted(PROTOCOL_BODIES)))
def test_fuzzed_openai_and_ollama_bodies_never_fail_the_server(fuzz_server, data, route):
    body = data.draw(PROTOCOL_BODIES[route])
    _check_protocol(route, fuzz_server.post(route, content=json.dumps(body).encode(),
                                            headers={"content-type": "application/json"}))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(sorted(PROTOCOL_BODIES)), raw=st.binary(max_size=200),
       content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_fuzzed_raw_openai_and_ollama_bodies_never_fail_the_server(fuzz_server, route, raw, content_type):
    headers = {"content-type": content_type} if content_type else {}
    _check_protocol(route, fuzz_server.post(route, content=raw, headers=headers))
