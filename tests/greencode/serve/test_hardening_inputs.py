"""Hardening (#26) of `greencode serve`: one deadline for headers and body, a cap on connections still
sending, numbers the sampler cannot take, FIM at the top of a file, the bearer scheme in any case. Real
uvicorn servers on loopback ports and real clients (httpx, raw sockets)."""

from __future__ import annotations

import json
import select
import socket
import time

import httpx
import pytest

from greencode.decoding.engine import EarlyExitEngine
from tests.conftest import _load
from tests.greencode.serve.serve_server import PROMPT, running_server, serve_config, wait_for

HUGE_SEED = 99999999999999999999999


@pytest.fixture(scope="module")
def tiny():
    return _load("tiny-random-llama")


@pytest.fixture(scope="module")
def server(tiny):
    with running_server(EarlyExitEngine(tiny), serve_config(max_new_tokens_cap=3)) as (url, _):
        yield url


def _connect(url: str) -> socket.socket:
    host, port = url.rsplit("//", 1)[1].split(":")
    return socket.create_connection((host, int(port)), timeout=20)


def _closed_by_server(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0]) and sock.recv(1, socket.MSG_PEEK) == b""


# -- row 1: the server tokenizes the window around the cursor, as `complete` and the TUI do ----------------

def test_a_long_prompt_is_cut_to_the_window_before_tokenizing(server):
    from greencode.decoding.window import MAX_CONTEXT_CHARS

    inputs = "x = 1\n" * 15_000  # 90,000 characters: under max_input_chars, some 60,000 tokens
    answer = httpx.post(f"{server}/generate", json={"inputs": inputs}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert 0 < answer.json()["details"]["dropped_prompt_tokens"] < MAX_CONTEXT_CHARS


# -- row 2: a trickled body meets one deadline; trickling connections cannot crowd out real ones --------

@pytest.fixture(scope="module")
def strict_server(tiny):
    config = serve_config(body_timeout_s=0.5, limit_concurrency=64)
    with running_server(EarlyExitEngine(tiny), config) as (url, _):
        yield url


def test_a_body_trickled_a_byte_at_a_time_gets_408_before_it_is_complete(strict_server):
    body = json.dumps({"inputs": PROMPT}).encode()  # ~80 bytes: 8 s at one byte every 0.1 s
    with _connect(strict_server) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        sent = 0
        while sent < len(body) and not select.select([sock], [], [], 0.1)[0]:
            sock.sendall(body[sent:sent + 1])  # each byte well within the 0.5 s: only a total deadline ends it
            sent += 1
        answer = b"".join(iter(lambda: sock.recv(65536), b""))  # the server closes after its 408
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer
    assert sent < len(body)


@pytest.fixture(scope="module")
def crowded_server(tiny):
    config = serve_config(body_timeout_s=60, limit_concurrency=8, limit_sending=3, timeout_keep_alive_s=60)
    with running_server(EarlyExitEngine(tiny), config) as (url, _):
        yield url


def test_connections_still_sending_cannot_crowd_out_real_requests(crowded_server):
    from greencode.serve.slow_clients import SENDING_GRACE_S

    stalled = []
    for _ in range(7):  # with a real request, 8 connections: limit_concurrency
        sock = _connect(crowded_server)
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50\r\n\r\n{")
        stalled.append(sock)
    try:
        time.sleep(SENDING_GRACE_S + 0.2)  # past the grace a real client gets to send its request
        statuses = [httpx.get(f"{crowded_server}/health").status_code for _ in range(4)]
        assert statuses == [200] * 4
        # the oldest senders were closed to make room: at most 3 may stay
        assert wait_for(lambda: sum(map(_closed_by_server, stalled)) >= 4, timeout=10)
    finally:
        for sock in stalled:
            sock.close()


# -- row 4 and row 8: numbers the dtype and the sampler cannot take -------------------------------------

@pytest.mark.parametrize("route, body, message", [
    ("/generate", {"inputs": PROMPT, "parameters": {"temperature": 1e39, "do_sample": True}},
     "parameters.temperature: Input should be less than or equal to 100"),
    ("/generate_stream", {"inputs": PROMPT, "parameters": {"temperature": 1e39}},
     "parameters.temperature: Input should be less than or equal to 100"),
    ("/v1/completions", {"model": "g", "prompt": PROMPT, "temperature": 1e39},
     "temperature: Input should be less than or equal to 100"),
    ("/api/generate", {"prompt": PROMPT, "stream": False, "options": {"temperature": 1e39}},
     "options.temperature: Input should be less than or equal to 100"),
    ("/v1/completions", {"model": "g", "prompt": PROMPT, "temperature": 1, "seed": HUGE_SEED},
     "seed: Input should be less than or equal to 9223372036854775807"),
    ("/generate", {"inputs": PROMPT, "parameters": {"top_p": 1.5}}, "parameters.top_p"),
])
def test_numbers_the_sampler_cannot_take_are_one_422(server, route, body, message):
    answer = httpx.post(f"{server}{route}", json=body, timeout=60)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert message in (error["message"] if route.startswith("/v1/") else error)


def test_the_engine_refuses_them_too(tiny):
    from greencode.errors import GreencodeError

    engine = EarlyExitEngine(tiny)
    with pytest.raises(GreencodeError, match=r"temperature must be in \[0, 100\]"):
        engine.complete(PROMPT, max_new_tokens=2, temperature=1e39)
    with pytest.raises(GreencodeError, match=r"seed must be in \[0, 9223372036854775807\]"):
        engine.complete(PROMPT, max_new_tokens=2, temperature=1.0, seed=HUGE_SEED)


@pytest.mark.parametrize("key, value, bound", [("engine.temperature", "1e39", "[0.0, 100.0]"),
                                               ("engine.seed", str(HUGE_SEED), "[0, 9223372036854775807]"),
                                               ("finetune.seed", str(2**32), "[0, 4294967295]")])
def test_the_cli_refuses_them_in_one_line(tmp_path, key, value, bound):
    from tests.cli import run_cli as greencode

    code = tmp_path / "a.py"
    code.write_text(PROMPT)
    ran = greencode("complete", code, "--model", "tiny-random-llama", "--engine.temperature", "1", f"--{key}", value)
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1
    assert f"'{key}' = " in ran.stderr and f"is out of range; allowed: {bound}" in ran.stderr


# -- row 11: a 5,000-digit number is named as such ------------------------------------------------------

def test_a_5000_digit_number_is_named_as_a_number(server):
    raw = b'{"inputs": "x", "parameters": {"seed": ' + b"9" * 5000 + b"}}"
    answer = httpx.post(f"{server}/generate", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("the body has a number with more than 4300 digits")


# -- row 13: FIM at the top of a file; the bearer scheme in any case -----------------------------------

def test_fim_with_an_empty_prefix_is_served(server, tiny):
    suffix = "\n\ndef main():\n    pass\n"
    answer = httpx.post(f"{server}/v1/completions", json={"model": "g", "prompt": "", "suffix": suffix,
                                                          "max_tokens": 3}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["choices"][0]["text"], str)
    ollama = httpx.post(f"{server}/api/generate", json={"prompt": "", "suffix": suffix, "stream": False,
                                                       "options": {"num_predict": 3}}, timeout=60)
    assert ollama.status_code == 200 and isinstance(ollama.json()["response"], str)
    fim = httpx.post(f"{server}/generate", json={"inputs": f"<fim_prefix><fim_suffix>{suffix}<fim_middle>"},
                     timeout=60)
    assert fim.status_code == 200, fim.text
    nothing = httpx.post(f"{server}/generate", json={"inputs": ""}, timeout=60)
    assert nothing.status_code == 422 and "inputs: String should have at least 1 character" in nothing.json()["error"]


@pytest.fixture(scope="module")
def token_server(tiny):
    with running_server(EarlyExitEngine(tiny), serve_config(token="Secret-1", max_new_tokens_cap=2)) as (url, _):
        yield url


@pytest.mark.parametrize("header, status", [("Bearer Secret-1", 200), ("bearer Secret-1", 200),
                                            ("BEARER  Secret-1", 200), ("Bearer secret-1", 401),
                                            ("Basic Secret-1", 401), ("Secret-1", 401)])
def test_the_bearer_scheme_is_case_insensitive_and_the_token_is_not(token_server, header, status):
    answer = httpx.post(f"{token_server}/generate", json={"inputs": PROMPT}, headers={"authorization": header},
                        timeout=60)
    assert answer.status_code == status


# -- found by the bad-input sweep ------------------------------------------------------------------------

@pytest.mark.parametrize("route, body, expected", [
    ("/generate", {"inputs": "x = '\\ud800'"}, "inputs: holds an unpaired surrogate"),
    ("/generate", {"inputs": "x", "parameters": {"stop": ["\\udc00"]}},
     "parameters: a stop sequence holds an unpaired surrogate"),
    ("/v1/completions", {"model": "g", "prompt": "x", "suffix": "\\ud800"}, "suffix: holds an unpaired surrogate"),
    ("/api/generate", {"prompt": "\\ud83d", "stream": False}, "prompt: holds an unpaired surrogate"),
])
def test_half_a_surrogate_pair_is_one_422(server, route, body, expected):
    raw = json.dumps(body).replace("\\\\u", "\\u").encode()  # the JSON escape itself, as a client sends it
    answer = httpx.post(f"{server}{route}", content=raw, headers={"content-type": "application/json"}, timeout=60)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert (error["message"] if route.startswith("/v1/") else error).startswith(expected)
