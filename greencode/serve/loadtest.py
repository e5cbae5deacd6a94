"""Load benchmark of `greencode serve`: N requests from C concurrent clients, loopback only, bounded.

    nice -n 10 greencode serve-bench --requests 200 --concurrency 20 --model default

(greencode/commands/serve_bench.py is the command; this module is what it runs.)

It starts its own server process on 127.0.0.1 (a free port), sends editor-like prompts (the text before a
cursor placed at the end of a line near [eval].context_fraction of a test-split file) and reports p50/p90/p99
latency, overall tokens/s, errors, and the server's resident memory after start-up, after a warm-up
request, every 25 requests, and at the end (growth over the second half shows whether it is bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

from greencode.errors import GreencodeError

MAX_REQUESTS, MAX_CONCURRENCY, MAX_TIME_LIMIT_S = 5000, 256, 3600
PROMPT_CHARS = 1500
RSS_EVERY = 25


def editor_prompts(data_config, fraction: float, count: int) -> list[str]:
    """Text before a cursor at the end of the line nearest `fraction` of each test-split file."""
    from greencode.data import load_split

    prompts = []
    for file in load_split(data_config, "test"):
        cursor = file.text.find("\n", int(len(file.text) * fraction))
        prompt = file.text[:cursor if cursor > 0 else len(file.text)][-PROMPT_CHARS:]
        if prompt.strip():
            prompts.append(prompt)
        if len(prompts) >= count:
            break
    if not prompts:
        raise GreencodeError(f"data.corpus {data_config.corpus!r}: no test-split file to build prompts from")
    return prompts


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


@contextlib.contextmanager
def serve_processes(servers: list[tuple[list[str], str]], deadline: float):
    """Run each `(command, url)` as a child `greencode serve` process, all started at once, until every one
    answers /health; stop them (SIGINT) on the way out. Yields the processes in the order given."""
    import httpx

    with contextlib.ExitStack() as stack:
        started = []
        for command, url in servers:
            log = stack.enter_context(tempfile.TemporaryFile("w+"))
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            stack.callback(_stop, process)
            started.append((process, url, log))
        for process, url, log in started:
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise GreencodeError(f"the server did not start: {log.read().strip()[-500:] or 'timed out'}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.5)
        yield [process for process, _, _ in started]


def _stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


def serve_command(port: int, model: str, policy: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "greencode.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--model", model, "--policy", policy, "--log-level", "warning", *extra]


ROUTES = {  # route -> (path, body for a prompt, where the answer keeps greencode's details)
    "generate": ("/generate", lambda prompt, n: {"inputs": prompt, "parameters": {"max_new_tokens": n}}, "details"),
    "openai": ("/v1/completions", lambda prompt, n: {"model": "greencode", "prompt": prompt, "max_tokens": n},
               "greencode"),
}


async def _load(url: str, prompts: list[str], requests: int, concurrency: int, max_new_tokens: int,
                deadline: float, pid: int, rss_samples: list, route: str = "generate") -> tuple[list[dict], float]:
    import httpx

    results: list[dict] = []
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(client_session):
        nonlocal issued
        while issued < requests and time.monotonic() < deadline:
            index = issued
            issued += 1
            path, make_body, details_key = ROUTES[route]
            body = make_body(prompts[index % len(prompts)], max_new_tokens)
            started = time.perf_counter()
            try:
                response = await client_session.post(f"{url}{path}", json=body,
                                                     timeout=max(1.0, deadline - time.monotonic()))
                ok = response.status_code == 200
                details = response.json()[details_key] if ok else {}
                error = None if ok else f"{response.status_code}: {response.text[:200]}"
            except Exception as exc:  # a timeout or a dropped connection is an error of the run, not of the bench
                ok, details, error = False, {}, f"{type(exc).__name__}: {exc}"
            results.append({"ok": ok, "seconds": time.perf_counter() - started, "error": error,
                            "tokens": details.get("generated_tokens", 0), "joules": details.get("joules", 0.0),
                            "layers_skipped_frac": details.get("layers_skipped_frac", 0.0)})
            if len(results) % RSS_EVERY == 0:
                rss_samples.append((len(results), rss_mb(pid)))

    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return results, time.perf_counter() - started


def run_bench(model: str, policy: str, requests: int, concurrency: int, max_new_tokens: int, time_limit_s: float,
              config, extra_server_args: list[str] | None = None, route: str = "generate") -> dict:
    import httpx

    if not 1 <= requests <= MAX_REQUESTS or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise GreencodeError(f"--requests must be in 1..{MAX_REQUESTS} and --concurrency in 1..{MAX_CONCURRENCY}")
    if not 1 <= time_limit_s <= MAX_TIME_LIMIT_S:
        raise GreencodeError(f"--time-limit must be in 1..{MAX_TIME_LIMIT_S} seconds")
    if route not in ROUTES:
        raise GreencodeError(f"--route {route!r} is not one of: {', '.join(ROUTES)}")
    prompts = editor_prompts(config.data, config.eval.context_fraction, min(requests, 100))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = serve_command(port, model, policy, ["--serve.queue_limit", str(concurrency),
                                                  "--serve.max_new_tokens_cap", str(max_new_tokens),
                                                  *(extra_server_args or [])])
    deadline = time.monotonic() + time_limit_s
    with serve_processes([(command, url)], deadline) as (server,):
        info = httpx.get(f"{url}/info").json()
        rss_started = rss_mb(server.pid)
        warm = httpx.post(f"{url}/generate", json={"inputs": prompts[0]},
                          timeout=max(1.0, deadline - time.monotonic()))
        if warm.status_code != 200:
            raise GreencodeError(f"the warm-up request failed: {warm.status_code} {warm.text[:200]}")
        rss_warm = rss_mb(server.pid)
        rss_samples: list = []
        results, wall = asyncio.run(_load(url, prompts, requests, concurrency, max_new_tokens, deadline,
                                          server.pid, rss_samples, route))
        rss_end = rss_mb(server.pid)
        queue = httpx.get(f"{url}/health").json()["queue"]
    report = _report(info, results, wall, requests, concurrency, max_new_tokens, rss_started, rss_warm, rss_samples,
                     rss_end, queue, command)
    return {**report, "route": ROUTES[route][0]}


def _report(info, results, wall, requests, concurrency, max_new_tokens, rss_started, rss_warm, rss_samples, rss_end,
            queue, command) -> dict:
    ok = [r for r in results if r["ok"]]
    latencies = [r["seconds"] for r in ok]
    tokens = sum(r["tokens"] for r in ok)
    errors = [r["error"] for r in results if not r["ok"]]
    middle = next((mb for n, mb in rss_samples if n >= len(results) // 2), None)
    return {
        "model": info["model"], "policy": info["policy"], "exit_points": info["exit_points"],
        "energy_source": info["energy_source"], "device": info["device"], "cpu_threads": info["cpu_threads"],
        "requests_planned": requests, "requests_sent": len(results), "concurrency": concurrency,
        "max_new_tokens": max_new_tokens, "ok": len(ok), "errors": len(errors) + (requests - len(results)),
        "error_examples": errors[:3], "wall_s": round(wall, 2),
        "latency_s": {"p50": round(percentile(latencies, 50), 3), "p90": round(percentile(latencies, 90), 3),
                      "p99": round(percentile(latencies, 99), 3), "max": round(max(latencies, default=0.0), 3)},
        "tokens": tokens, "tokens_per_s": round(tokens / wall, 2) if wall > 0 else 0.0,
        "requests_per_s": round(len(ok) / wall, 3) if wall > 0 else 0.0,
        "joules_per_token": round(sum(r["joules"] for r in ok) / tokens, 4) if tokens else 0.0,
        "layers_skipped_frac": round(sum(r["layers_skipped_frac"] for r in ok) / len(ok), 4) if ok else 0.0,
        "server_rss_mb": {"after_start": rss_started, "after_warmup": rss_warm, "middle": middle, "end": rss_end,
                          "samples": rss_samples,
                          "growth_second_half": round(rss_end - middle, 1) if rss_end and middle else None},
        "server_queue": queue, "server_command": " ".join(command[1:]),
    }


def print_report(report: dict) -> None:
    lat, rss = report["latency_s"], report["server_rss_mb"]
    fmt = lambda v: f"{v:.0f}" if isinstance(v, (int, float)) else "n/a"  # noqa: E731
    typer.echo(f"model {report['model']} | policy {report['policy']} | energy {report['energy_source']} | "
               f"{report['device']}, {report['cpu_threads']} CPU threads")
    typer.echo(f"{report['ok']}/{report['requests_planned']} ok to {report['route']}, {report['errors']} errors, "
               f"{report['concurrency']} concurrent clients, {report['max_new_tokens']} new tokens each, "
               f"wall {report['wall_s']} s")
    typer.echo(f"latency p50 {lat['p50']} s, p90 {lat['p90']} s, p99 {lat['p99']} s, max {lat['max']} s")
    typer.echo(f"throughput {report['tokens_per_s']} tokens/s overall ({report['tokens']} tokens), "
               f"{report['requests_per_s']} requests/s; {report['joules_per_token']} J/token, "
               f"layers skipped {report['layers_skipped_frac']:.1%}")
    typer.echo(f"server RSS MB: after start {fmt(rss['after_start'])}, after warm-up {fmt(rss['after_warmup'])}, "
               f"middle {fmt(rss['middle'])}, end {fmt(rss['end'])} (second-half growth {rss['growth_second_half']})")
    for example in report["error_examples"]:
        typer.echo(f"  error: {example}")
