"""Hardening (#16) of `greencode serve`: real uvicorn servers on loopback ports, real clients (httpx, raw sockets)."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from greencode.decoding.engine import EarlyExitEngine
from greencode.errors import GreencodeError
from greencode.model.load import load_model
from tests.conftest import _load
from tests.greencode.serve.serve_server import PROMPT, running_server, serve_config, sse_events, wait_for
from tests.cli import REPO, run_cli

WINDOW = 32  # positions of the small-window GPT-2 below


@pytest.fixture(scope="module")
def tiny():
    return _load("tiny-random-llama")


@pytest.fixture(scope="module")
def server(tiny):
    engine = EarlyExitEngine(tiny)
    with running_server(engine, serve_config(max_new_tokens_cap=3)) as (url, state):
        yield url, state


@pytest.fixture(scope="module")
def small_window_dir(tmp_path_factory):
    """A GPT-2 with a 32-position window (learned position embeddings: past 32 it would IndexError), on disk."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _load("tiny-random-gpt2").tokenizer
    config = GPT2Config(n_embd=64, n_layer=12, n_head=4, n_positions=WINDOW, vocab_size=len(tokenizer),
                        bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("private-models") / "secret-location" / "gpt2-32"
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# -- 10: a vanishing top_p keeps the top token ------------------------------------------------------

def test_tiny_top_p_samples_the_top_token(tiny):
    engine = EarlyExitEngine(tiny)
    greedy = engine.complete(PROMPT, max_new_tokens=4).text
    assert engine.complete(PROMPT, max_new_tokens=4, temperature=1.0, top_p=1e-300, seed=1).text == greedy


@pytest.mark.parametrize("route", ["/generate", "/generate_stream"])
def test_tiny_top_p_over_http_is_200(server, route):
    url, _ = server
    body = {"inputs": PROMPT, "parameters": {"do_sample": True, "temperature": 1.0, "top_p": 1e-300}}
    answer = httpx.post(f"{url}{route}", json=body, timeout=60)
    assert answer.status_code == 200
    if route == "/generate_stream":
        assert "error" not in sse_events(answer.text.splitlines())[-1]


# -- 11: DNS rebinding --------------------------------------------------------------------------------

@pytest.mark.parametrize("host, status", [
    ("evil.example", 403), ("evil.example:8080", 403), ("127.0.0.1.nip.io", 403), ("", 403),
    ("localhost", 200), ("localhost:9", 200), ("127.0.0.1:1", 200), ("[::1]:8080", 200), ("LOCALHOST", 200),
])
def test_without_a_token_only_loopback_host_names_are_served(server, host, status):
    url, _ = server
    for path in ("/health", "/info"):
        answer = httpx.get(f"{url}{path}", headers={"host": host})
        assert answer.status_code == status, (path, host, answer.text)
        if status == 403:
            assert "loopback Host" in answer.json()["error"]


def test_with_a_token_any_host_name_is_served(tiny):
    engine = EarlyExitEngine(tiny)
    with running_server(engine, serve_config(token="s3cret")) as (url, _):
        answer = httpx.get(f"{url}/info", headers={"host": "my-box.lan:8080", "authorization": "Bearer s3cret"})
        assert answer.status_code == 200


def _serve_cli(*args):
    return run_cli("serve", "--model", "tiny-random-llama", *args, cwd=REPO)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7"])
def test_a_non_loopback_host_needs_a_token(host):
    result = _serve_cli("--host", host, "--port", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"greencode: error: --host {host} is reachable from other machines and no --token is set; "
        "add --token SECRET, or --allow-unauthenticated if that is what you want"]


# -- 12: slow clients ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def strict_server(tiny):
    engine = EarlyExitEngine(tiny)
    config = serve_config(body_timeout_s=0.5, limit_concurrency=4, timeout_keep_alive_s=0.5)
    with running_server(engine, config) as (url, _):
        yield url


def _connect(url: str) -> socket.socket:
    host, port = url.rsplit("//", 1)[1].split(":")
    return socket.create_connection((host, int(port)), timeout=20)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_body_that_never_arrives_gets_408(strict_server):
    with _connect(strict_server) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"inputs\": ")
        started = time.monotonic()
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer
    assert time.monotonic() - started < 15


def test_headers_that_never_finish_close_the_connection(strict_server):
    with _connect(strict_server) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: local")
        assert _read_all(sock) == b""  # closed by the server, not left open forever


def test_idle_connections_are_closed(strict_server):
    with _connect(strict_server) as sock:
        assert _read_all(sock) == b""


@pytest.fixture(scope="module")
def crowded_server(tiny):
    # A long keep-alive: on a loaded machine the strict server's 0.5 s would close the idle
    # connections before the probe arrives, and the limit would never be reached.
    engine = EarlyExitEngine(tiny)
    config = serve_config(limit_concurrency=4, timeout_keep_alive_s=60)
    with running_server(engine, config) as (url, _):
        yield url


def test_connections_past_the_limit_get_503(crowded_server):
    idle = [_connect(crowded_server) for _ in range(3)]
    try:
        time.sleep(0.1)
        assert httpx.get(f"{crowded_server}/health").status_code == 503
    finally:
        for sock in idle:
            sock.close()
    assert wait_for(lambda: httpx.get(f"{crowded_server}/health").status_code == 200, timeout=20)


def test_the_shipped_toml_documents_the_new_serve_keys():
    text = (REPO / "greencode.toml").read_text()
    for key in ("allow_unauthenticated", "body_timeout_s", "limit_concurrency", "timeout_keep_alive_s"):
        assert f"\n{key} = " in text


# -- 13: a capped max_new_tokens is said ---------------------------------------------------------------

@pytest.mark.parametrize("route", ["/generate", "/", "/generate_stream"])
def test_a_capped_max_new_tokens_is_reported(server, route):
    url, _ = server
    answer = httpx.post(f"{url}{route}", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 50}}, timeout=60)
    assert answer.status_code == 200
    assert answer.headers["x-greencode-warning"] == "max_new_tokens 50 capped at 3 ([serve].max_new_tokens_cap)"
    if route == "/generate_stream":
        details = sse_events(answer.text.splitlines())[-1]["details"]
    else:
        details = answer.json()[0]["details"] if route == "/" else answer.json()["details"]
    assert details["max_new_tokens"] == 3 and details["warnings"] == [answer.headers["x-greencode-warning"]]


def test_an_uncapped_request_has_no_warning(server):
    url, _ = server
    answer = httpx.post(f"{url}/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2}}, timeout=60)
    assert "x-greencode-warning" not in answer.headers and answer.json()["details"]["warnings"] == []


# -- 14: deep nesting is called nesting -------------------------------------------------------------

@pytest.mark.parametrize("depth", [100, 100_000])
def test_deep_json_nesting_is_reported_as_nesting(server, depth):
    url, _ = server
    body = '{"inputs": "x", "parameters": {"top_k": ' + "[" * depth + "]" * depth + "}}"
    answer = httpx.post(f"{url}/generate", content=body, headers={"content-type": "application/json"})
    assert answer.status_code in (413, 422)
    if answer.status_code == 422:
        assert "nests arrays/objects more than 64 levels deep" in answer.json()["error"]


def test_brackets_inside_strings_are_not_nesting(server):
    url, _ = server
    answer = httpx.post(f"{url}/generate", json={"inputs": "x = " + "[" * 200, "parameters": {"max_new_tokens": 1}},
                        timeout=60)
    assert answer.status_code == 200


# -- 9 and 15: the position window, names not paths ---------------------------------------------------

def test_the_engine_refuses_more_tokens_than_the_window_holds(small_window_dir):
    engine = EarlyExitEngine(load_model(str(small_window_dir), device="cpu"))
    with pytest.raises(GreencodeError, match=f"position window of {WINDOW} tokens; ask for at most {WINDOW - 1}"):
        engine.complete("x = 1", max_new_tokens=WINDOW)
    long_prompt = "values = [" + ", ".join(str(i) for i in range(200)) + "]\n"
    summary = engine.complete(long_prompt, max_new_tokens=WINDOW - 1)  # the prompt is clamped to one token
    assert summary.tokens == WINDOW - 1 and summary.dropped_prompt_tokens > 0


def test_the_server_caps_at_the_window_and_shows_no_paths(small_window_dir, tmp_path):
    agent = tmp_path / "private" / "agents" / "agent.safetensors"
    engine = EarlyExitEngine(load_model(str(small_window_dir), device="cpu"), agent_path=str(agent))
    with running_server(engine, serve_config(max_new_tokens_cap=500)) as (url, _):
        long_prompt = "values = [" + ", ".join(str(i) for i in range(200)) + "]\n"
        answer = httpx.post(f"{url}/generate", json={"inputs": long_prompt, "parameters": {"max_new_tokens": 400}},
                            timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["details"]["warnings"] == [
            f"max_new_tokens 400 capped at {WINDOW - 1} (the model's position window)"]
        refused = httpx.post(f"{url}/generate", json={"inputs": "x", "parameters": {"greencode": {"policy": "agent:0.9"}}})
        assert refused.status_code == 422 and "agent.safetensors" in refused.json()["error"]
        info = httpx.get(f"{url}/info").text
        for answer_text in (refused.text, info):
            assert str(tmp_path) not in answer_text and "secret-location" not in answer_text
        assert json.loads(info)["model"] == "gpt2-32"
