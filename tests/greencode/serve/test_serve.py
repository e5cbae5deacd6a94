"""`greencode serve` against a real uvicorn server on a loopback port, with a real HTTP client."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from greencode.decoding.engine import EarlyExitEngine
from greencode.model.load import load_model
from tests.greencode.serve.serve_server import PROMPT, running_server, serve_config, sse_events, wait_for


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random-llama", device="cpu")


@pytest.fixture(scope="module")
def server(tiny):
    engine = EarlyExitEngine(tiny)
    config = serve_config(max_new_tokens_cap=6, max_input_chars=2000, max_body_bytes=8000)
    with running_server(engine, config) as (url, state):
        yield url, state


def _generate(url, route="/generate", **body):
    return httpx.post(f"{url}{route}", json={"inputs": PROMPT, **body}, timeout=60)


def test_health_and_info(server):
    url, _ = server
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["queue"]["limit"] == 16
    info = httpx.get(f"{url}/info").json()
    assert info["exit_points"] == [4, 6, 10] and info["num_layers"] == 12
    assert info["policy"] == "full" and info["threshold"] is None
    assert info["energy_source"].startswith(("estimate", "measured: cpu", "measured: gpu"))
    assert info["model_id"] == "greencode" and info["model"] == "tiny-random-llama"


def test_generate_matches_the_engine_and_reports_details(server, tiny):
    url, _ = server
    answer = _generate(url, parameters={"max_new_tokens": 5})
    assert answer.status_code == 200
    body = answer.json()
    expected = EarlyExitEngine(tiny).complete(PROMPT, max_new_tokens=5)
    assert body["generated_text"] == expected.text
    details = body["details"]
    assert details["generated_tokens"] == 5 == len(details["tokens"]) == len(details["exit_layers"])
    assert [t["id"] for t in details["tokens"]] == [e.token_id for e in expected.events]
    assert details["exit_layers"] == [12] * 5 and details["layers_skipped_frac"] == 0.0
    assert details["joules"] > 0 and details["energy_source"] == expected.energy_source
    assert details["finish_reason"] == "length" and details["policy"] == "full"


def test_inference_api_routes_answer_a_list_without_the_prompt_unless_asked(server):
    url, _ = server
    completion = _generate(url, parameters={"max_new_tokens": 2}).json()["generated_text"]
    for route in ("/", "/models/bigcode/starcoder"):
        body = _generate(url, route, parameters={"max_new_tokens": 2}).json()
        assert isinstance(body, list) and len(body) == 1
        assert body[0]["generated_text"] == completion and body[0]["details"]["generated_tokens"] == 2  # TGI's default
    full = _generate(url, "/", parameters={"max_new_tokens": 2, "return_full_text": True}).json()
    assert full[0]["generated_text"] == PROMPT + completion


def _stream(url, route="/generate_stream", **body):
    with httpx.stream("POST", f"{url}{route}", json={"inputs": PROMPT, **body}, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse_events(response.iter_lines())


def test_stream_one_event_per_token_then_the_text(server):
    url, _ = server
    events = _stream(url, parameters={"max_new_tokens": 5})
    final = events[-1]
    assert len(events) == final["details"]["generated_tokens"] == 5
    assert [e["index"] for e in events] == list(range(5))
    assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    assert final["generated_text"] == "".join(e["token"]["text"] for e in events)
    assert [e["token"]["exit_layer"] for e in events] == final["details"]["exit_layers"]
    again = _generate(url, parameters={"max_new_tokens": 5}).json()
    assert again["generated_text"] == final["generated_text"]
    hf = _stream(url, "/", stream=True, parameters={"max_new_tokens": 3, "return_full_text": False})
    assert len(hf) == 3 and hf[-1]["generated_text"] == final["generated_text"][:len(hf[-1]["generated_text"])]


def test_a_model_without_an_agent_serves_the_confidence_fallback(tiny):
    with running_server(EarlyExitEngine(tiny), serve_config(), policy=None) as (url, _):  # [engine].policy agent:0.9
        assert httpx.get(f"{url}/info").json()["policy"] == "confidence:0.9"
        details = _generate(url, parameters={"max_new_tokens": 2}).json()["details"]
        assert details["policy"] == "confidence:0.9"


def test_per_request_policy_overrides_only_that_request(server):
    url, _ = server
    fixed = _generate(url, parameters={"max_new_tokens": 4, "greencode": {"policy": "fixed:4"}}).json()["details"]
    assert fixed["exit_layers"] == [12, 4, 4, 4] and fixed["policy"] == "fixed:4"  # token 1 comes from the prefill
    assert fixed["joules_saved"] > 0
    confident = _generate(url, parameters={"max_new_tokens": 3,
                                           "greencode": {"policy": "confidence:0.5", "threshold": 0.0}}).json()
    assert confident["details"]["exit_layers"] == [12, 4, 4] and confident["details"]["policy"] == "confidence:0"
    default = _generate(url, parameters={"max_new_tokens": 3}).json()["details"]
    assert default["exit_layers"] == [12, 12, 12] and default["policy"] == "full"
    assert httpx.get(f"{url}/info").json()["policy"] == "full"


def test_llm_ls_nested_parameters(server):
    url, _ = server
    # What llm-ls posts when the user's request body has no "parameters": it nests its own.
    body = {"inputs": PROMPT, "max_new_tokens": 60, "parameters": {"parameters": {"return_full_text": False}}}
    answer = httpx.post(f"{url}/generate", json=body, timeout=60).json()
    assert answer["details"]["generated_tokens"] == 4  # [engine].max_new_tokens; top-level keys are not parameters
    nested = {"inputs": PROMPT, "parameters": {"temperature": 0.0, "parameters": {
        "max_new_tokens": 2, "return_full_text": False, "greencode": {"policy": "fixed:6"}}}}
    answer = httpx.post(f"{url}/generate", json=nested, timeout=60).json()
    assert answer["details"]["exit_layers"] == [12, 6] and not answer["generated_text"].startswith(PROMPT)


def test_limits(server):
    url, _ = server
    capped = _generate(url, parameters={"max_new_tokens": 10_000}).json()
    assert capped["details"]["generated_tokens"] == 6  # [serve].max_new_tokens_cap
    long_input = httpx.post(f"{url}/generate", json={"inputs": "x" * 2001}, timeout=60)
    assert long_input.status_code == 413 and "2001 characters" in long_input.json()["error"]
    big_body = httpx.post(f"{url}/generate", json={"inputs": "x", "pad": "y" * 9000}, timeout=60)
    assert big_body.status_code == 413 and "8000 bytes" in big_body.json()["error"]

    def chunks():  # no Content-Length: the server must count what arrives
        for _ in range(10):
            yield b" " * 1000
    chunked = httpx.post(f"{url}/generate", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert chunked.status_code == 413


@pytest.mark.parametrize("body, message", [
    (b'{"inputs": "x",', "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"parameters": {}}', "inputs: Field required"),
    (b'{"inputs": ""}', "inputs: String should have at least 1 character"),
    (b'{"inputs": 3}', "inputs: Input should be a valid string"),
    (b'{"inputs": "x", "parameters": {"max_new_tokens": "5"}}',
     "parameters.max_new_tokens: Input should be a valid integer"),
    (b'{"inputs": "x", "parameters": {"max_new_tokens": 0}}', "parameters.max_new_tokens"),
    (b'{"inputs": "x", "parameters": {"temperature": -1}}', "parameters.temperature"),
    (b'{"inputs": "x", "parameters": {"top_p": 0}}', "parameters.top_p"),
    (b'{"inputs": "x", "parameters": {"stop": "\\n"}}', "parameters.stop: Input should be a valid list"),
    (b'{"inputs": "x", "parameters": {"stop": [""]}}', "stop sequence"),
    (b'{"inputs": "x", "parameters": {"return_full_text": 1}}', "parameters.return_full_text"),
    (b'{"inputs": "x", "parameters": {"greencode": {"treshold": 0.5}}}', "parameters.greencode.treshold: Extra inputs"),
    (b'{"inputs": "x", "parameters": {"greencode": {"policy": "bogus"}}}', "unknown policy 'bogus'"),
    (b'{"inputs": "x", "parameters": {"greencode": {"policy": "fixed:5"}}}', "not an exit point"),
    (b'{"inputs": "x", "parameters": {"greencode": {"policy": "confidence:0.5", "threshold": 2}}}', "[0, 1]"),
    (b'{"inputs": "x", "parameters": {"greencode": {"policy": "agent:0.9"}}}', "agent file"),
])
def test_malformed_requests_get_a_clear_422(server, body, message):
    url, _ = server
    answer = httpx.post(f"{url}/generate", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error_type"] == "validation" and message in answer.json()["error"]


def test_unknown_routes_and_methods_answer_json(server):
    url, _ = server
    assert httpx.get(f"{url}/nowhere").json() == {"error": "Not Found", "error_type": "http"}
    assert httpx.get(f"{url}/generate").status_code == 405
    ignored = _generate(url, parameters={"max_new_tokens": 1, "top_k": 50, "repetition_penalty": 1.2}).json()
    assert ignored["details"]["ignored_parameters"] == ["repetition_penalty", "top_k"]


def test_bearer_token(tiny):
    engine = EarlyExitEngine(tiny)
    with running_server(engine, serve_config(token="s3cret")) as (url, _):
        body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 1}}
        assert httpx.post(f"{url}/generate", json=body).status_code == 401
        wrong = httpx.post(f"{url}/generate", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error_type"] == "authentication"
        assert httpx.get(f"{url}/info").status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200  # liveness stays open
        good = httpx.post(f"{url}/generate", json=body, headers={"Authorization": "Bearer s3cret"}, timeout=60)
        assert good.status_code == 200 and good.json()["details"]["generated_tokens"] == 1


def test_queue_limit_429_and_disconnects_free_the_worker(tiny):
    engine = EarlyExitEngine(tiny)
    config = serve_config(queue_limit=1, max_new_tokens_cap=2047)  # the most the position window (2048) allows
    with running_server(engine, config) as (url, state):
        queue = state.queue
        client = httpx.Client(timeout=60)
        long_body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 2047}}
        with client.stream("POST", f"{url}/generate_stream", json=long_body) as running:
            lines = running.iter_lines()
            assert next(lines).startswith("data:")  # generating: the worker is busy for a long while
            waiter = {}
            waiting = threading.Thread(target=lambda: waiter.update(
                answer=httpx.post(f"{url}/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2}},
                                  timeout=120)))
            waiting.start()
            wait_for(lambda: queue.snapshot()["waiting"] == 1)
            rejected = client.post(f"{url}/generate", json={"inputs": PROMPT})
            assert rejected.status_code == 429 and rejected.json()["error_type"] == "overloaded"
            assert queue.snapshot()["rejected"] == 1
        # Leaving the block closed the stream mid-generation: the worker must drop it and serve the waiter.
        waiting.join(60)
        assert waiter["answer"].status_code == 200 and waiter["answer"].json()["details"]["generated_tokens"] == 2
        stats = wait_for(lambda: (s := queue.snapshot()) and not s["running"] and s)
        assert stats["cancelled"] == 1 and stats["served"] == 1
        assert stats["tokens"] < 2047 // 2  # the abandoned stream stopped long before its 2047 tokens

        # A request that gives up while still waiting leaves the queue without running.
        with client.stream("POST", f"{url}/generate_stream", json=long_body) as running:
            lines = running.iter_lines()  # kept: dropping the iterator would close the stream
            next(lines)
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/generate", json={"inputs": PROMPT}, timeout=1.0)
            wait_for(lambda: queue.snapshot()["waiting"] == 0)
            assert queue.snapshot()["running"]
        stats = wait_for(lambda: (s := queue.snapshot()) and not s["running"] and s)
        assert stats["cancelled"] == 3 and stats["served"] == 1

        # A plain (non-streaming) request whose client gives up mid-generation is cancelled too.
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/generate", json=long_body, timeout=1.5)
        stats = wait_for(lambda: (s := queue.snapshot()) and not s["running"] and s)
        assert stats["cancelled"] == 4 and stats["served"] == 1
        after = httpx.post(f"{url}/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 1}}, timeout=60)
        assert after.status_code == 200
        client.close()


@pytest.mark.integration
def test_default_model_server(default_model):
    engine = EarlyExitEngine(default_model)
    with running_server(engine, serve_config(), "confidence:0.9") as (url, _):
        info = httpx.get(f"{url}/info").json()
        assert info["num_layers"] == 30 and info["exit_points"] == [4, 6, 8, 10, 12, 14, 19, 23, 27]
        assert info["policy"] == "confidence:0.9" and info["threshold"] == 0.9
        body = httpx.post(f"{url}/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 6}},
                          timeout=120).json()
        expected = EarlyExitEngine(default_model).complete(PROMPT, "confidence:0.9", max_new_tokens=6)
        assert body["generated_text"] == expected.text
        assert set(body["details"]["exit_layers"]) <= set(info["exit_points"]) | {30}
        with httpx.stream("POST", f"{url}/generate_stream", timeout=120,
                          json={"inputs": PROMPT, "parameters": {"max_new_tokens": 6}}) as response:
            events = sse_events(response.iter_lines())
        assert len(events) == events[-1]["details"]["generated_tokens"] == 6
        assert events[-1]["generated_text"] == expected.text
        assert json.loads(json.dumps(events[-1]["details"]))["energy_source"] == expected.energy_source
