"""`greencode serve` as a user starts it: a real process, loopback by default, clean one-line errors."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from tests.cli import run_cli
from tests.greencode.serve.serve_server import PROMPT, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _greencode(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "greencode.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_serve_command_binds_loopback_with_a_token(tmp_path):
    port = _free_port()
    process = _greencode("serve", "--model", "tiny-random-llama", "--policy", "confidence:0.5", "--threshold", "0.25",
                         "--port", str(port), "--token", "t0k", "--log-level", "warning",
                         "--engine.max_new_tokens", "3", "--threads", "1", cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"

        def up():
            if process.poll() is not None:
                raise AssertionError(process.communicate()[1])
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
        wait_for(up, timeout=120, interval=0.2)
        auth = {"Authorization": "Bearer t0k"}
        info = httpx.get(f"{url}/info", headers=auth).json()
        assert info["policy"] == "confidence:0.25" and info["threshold"] == 0.25 and info["auth"] is True
        assert info["cpu_threads"] == 1
        answer = httpx.post(f"{url}/generate", json={"inputs": PROMPT}, headers=auth, timeout=60)
        assert answer.status_code == 200 and answer.json()["details"]["generated_tokens"] == 3
        assert httpx.post(f"{url}/generate", json={"inputs": PROMPT}).status_code == 401
        listening = [line.split()[1] for line in open("/proc/net/tcp").read().splitlines()[1:]]
        assert f"0100007F:{port:04X}" in listening  # 127.0.0.1, not 0.0.0.0
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert "http://127.0.0.1:" in err and "Traceback" not in err


def test_serve_errors_are_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        taken_port = run_cli("serve", "--model", "tiny-random-llama", "--port", str(port), cwd=tmp_path)
    assert taken_port.returncode == 2 and taken_port.stderr.strip().startswith("greencode: error: cannot listen on 127.0.0.1:")
    assert len(taken_port.stderr.strip().splitlines()) == 1
    bad_key = run_cli("serve", "--serve.queue_limit", "-1", cwd=tmp_path)
    assert bad_key.returncode == 2 and "serve.queue_limit" in bad_key.stderr and len(bad_key.stderr.strip().splitlines()) == 1


def test_load_benchmark_runs_end_to_end_on_loopback():
    from greencode.serve.loadtest import run_bench
    from greencode.config import load_config

    report = run_bench("tiny-random-llama", "fixed:6", requests=6, concurrency=3, max_new_tokens=2, time_limit_s=300,
                       config=load_config(None))
    assert report["ok"] == 6 and report["errors"] == 0 and report["requests_sent"] == 6
    assert 6 <= report["tokens"] <= 12 and report["tokens_per_s"] > 0
    assert report["latency_s"]["p50"] <= report["latency_s"]["p99"] <= report["latency_s"]["max"]
    assert report["policy"] == "fixed:6" and report["server_queue"]["served"] == 7  # + the warm-up
    assert report["server_rss_mb"]["after_warmup"] > 0 and report["server_rss_mb"]["end"] > 0
    assert "--host 127.0.0.1" in report["server_command"]


@pytest.mark.parametrize("command, bad, message", [
    ("serve-bench", "0", "--requests must be in 1..5000 and --concurrency in 1..256"),
    ("typing-bench", "1", "--requests must be in 2..500 and --step in 1..40"),
])
def test_benchmarks_are_greencode_commands_with_one_line_errors(command, bad, message):
    listed = run_cli("--help")
    assert command in listed.stdout
    result = run_cli(command, "--requests", bad)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"greencode: error: {message}"


def test_typing_bench_command_runs_both_servers_side_by_side(tmp_path):
    ran = run_cli("typing-bench", "--model", "tiny-random-llama", "--policy", "full", "--requests", "3", "--step", "3",
                  "--context-chars", "400", "--max-new-tokens", "2", "--json", str(tmp_path / "typing.json"))
    assert ran.returncode == 0, ran.stderr
    assert "with reuse / without" in ran.stdout
    report = json.loads((tmp_path / "typing.json").read_text())
    assert report["requests"] == 3 and report["identical_completions"] == 3
    assert report["prompt_chars"][1] == report["prompt_chars"][0] + 6  # the prompt grew as the user typed
    assert report["reused_prompt_tokens_mean"] >= report["prompt_tokens"][0] - 3  # only the new tokens ran
    assert set(report["latency_s"]) == {"reuse", "no_reuse"} and report["p50_ratio"] > 0
    assert "--engine.prefix_cache 0" in report["server_commands"]["no_reuse"]
