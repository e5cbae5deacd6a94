"""Hypothesis over the request schema against a real server: every answer is 200, 413 or 422 with a
JSON error, never a 500 (or a dropped connection)."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from greencode.engine import EarlyExitEngine
from greencode.models import load_model
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
