"""Typing benchmark of `greencode serve`: an editor's requests while the user types, with and without
prefix reuse, side by side in one run (loopback only, bounded).

    greencode typing-bench --model default --requests 30

Two server processes on 127.0.0.1 serve the same model, one with [engine].prefix_cache on and one with
it off. A cursor is placed at the end of a line near [eval].context_fraction of a test-split file; the
prompt is the text before it (from a line start, about --context-chars), the suffix the text after the
characters the user will type. Each request adds --step characters of the file to the prompt, as an
editor sends them one after another (POST /v1/completions with `suffix`). Each request goes to both
servers in turn (alternating which goes first), so both see the same machine load. Reports p50/p95
latency of each, their ratio, whether the completions are identical, and the prompt tokens reused.
"""

from __future__ import annotations

import time

import typer

from greencode.errors import GreencodeError
from greencode.serve.loadtest import free_port, percentile, serve_command, serve_processes

MAX_REQUESTS, MAX_STEP, MAX_CONTEXT_CHARS = 500, 40, 20_000
SUFFIX_CHARS = 300


def typing_session(data_config, fraction: float, requests: int, step: int, context_chars: int) -> list[tuple]:
    """(prompt, suffix) per request: the prompt grows by `step` characters each time; the suffix stays."""
    from greencode.data import load_split

    typed = requests * step
    for file in load_split(data_config, "test"):
        cursor = file.text.find("\n", int(len(file.text) * fraction)) + 1
        if cursor <= 0 or len(file.text) - cursor < typed + 10:
            continue
        start = file.text.rfind("\n", 0, max(0, cursor - context_chars)) + 1  # a line start: a stable prefix
        before = file.text[start:cursor]
        if len(before.strip()) < context_chars // 4:
            continue
        after = file.text[cursor + typed:cursor + typed + SUFFIX_CHARS]
        return [(before + file.text[cursor:cursor + i * step], after) for i in range(requests)]
    raise GreencodeError(f"data.corpus {data_config.corpus!r}: no test-split file long enough for {requests} "
                         f"requests of {step} characters")


def run_typing_bench(model: str, policy: str, requests: int, step: int, context_chars: int, max_new_tokens: int,
                     time_limit_s: float, config, server_threads: int = 1) -> dict:
    import contextlib

    import httpx

    if not 2 <= requests <= MAX_REQUESTS or not 1 <= step <= MAX_STEP:
        raise GreencodeError(f"--requests must be in 2..{MAX_REQUESTS} and --step in 1..{MAX_STEP}")
    if not 100 <= context_chars <= MAX_CONTEXT_CHARS:
        raise GreencodeError(f"--context-chars must be in 100..{MAX_CONTEXT_CHARS}")
    session = typing_session(config.data, config.eval.context_fraction, requests, step, context_chars)
    deadline = time.monotonic() + time_limit_s
    servers = {}
    with contextlib.ExitStack() as stack:
        for name, entries in (("reuse", config.engine.prefix_cache or 4), ("no_reuse", 0)):
            port = free_port()
            command = serve_command(port, model, policy, ["--threads", str(server_threads),
                                                          "--engine.prefix_cache", str(entries)])
            servers[name] = {"url": f"http://127.0.0.1:{port}", "command": command, "seconds": [], "texts": [],
                             "reused": [], "prompt_tokens": []}
        stack.enter_context(serve_processes([(s["command"], s["url"]) for s in servers.values()], deadline))
        with httpx.Client(timeout=max(1.0, time_limit_s)) as client:
            for name, server in servers.items():  # warm-up on another prompt: both pay first-call costs alike
                client.post(f"{server['url']}/v1/completions", json={"prompt": "import os\n", "max_tokens": 2})
            for index, (prompt, suffix) in enumerate(session):
                if time.monotonic() > deadline:
                    raise GreencodeError(f"--time-limit reached after {index} of {requests} requests")
                order = list(servers) if index % 2 == 0 else list(reversed(servers))
                for name in order:
                    server = servers[name]
                    body = {"model": "greencode", "prompt": prompt, "suffix": suffix, "max_tokens": max_new_tokens}
                    started = time.perf_counter()
                    answer = client.post(f"{server['url']}/v1/completions", json=body)
                    server["seconds"].append(time.perf_counter() - started)
                    if answer.status_code != 200:
                        raise GreencodeError(f"request {index} to the {name} server failed: "
                                             f"{answer.status_code} {answer.text[:200]}")
                    result = answer.json()
                    server["texts"].append(result["choices"][0]["text"])
                    server["reused"].append(result["greencode"].get("reused_prompt_tokens", 0))
                    server["prompt_tokens"].append(result["usage"]["prompt_tokens"])
            info = client.get(f"{servers['reuse']['url']}/info").json()
    return _report(info, servers, session, step, max_new_tokens)


def _report(info: dict, servers: dict, session: list, step: int, max_new_tokens: int) -> dict:
    def latency(seconds: list[float]) -> dict:
        return {"p50": round(percentile(seconds, 50), 3), "p95": round(percentile(seconds, 95), 3),
                "mean": round(sum(seconds) / len(seconds), 3)}

    reuse, plain = servers["reuse"], servers["no_reuse"]
    with_reuse, without = latency(reuse["seconds"]), latency(plain["seconds"])
    return {
        "model": info["model"], "policy": info["policy"], "energy_source": info["energy_source"],
        "cpu_threads": info["cpu_threads"], "requests": len(session), "step_chars": step,
        "max_new_tokens": max_new_tokens, "prompt_chars": [len(session[0][0]), len(session[-1][0])],
        "prompt_tokens": [min(reuse["prompt_tokens"]), max(reuse["prompt_tokens"])],
        "latency_s": {"reuse": with_reuse, "no_reuse": without},
        "p50_ratio": round(with_reuse["p50"] / without["p50"], 3) if without["p50"] else None,
        "p95_ratio": round(with_reuse["p95"] / without["p95"], 3) if without["p95"] else None,
        "reused_prompt_tokens_mean": round(sum(reuse["reused"][1:]) / max(1, len(reuse["reused"]) - 1), 1),
        "identical_completions": sum(a == b for a, b in zip(reuse["texts"], plain["texts"])),
        "server_commands": {name: " ".join(server["command"][1:]) for name, server in servers.items()},
    }


def print_report(report: dict) -> None:
    lat = report["latency_s"]
    typer.echo(f"model {report['model']} | policy {report['policy']} | "
               f"{report['cpu_threads']} CPU thread(s) per server")
    typer.echo(f"{report['requests']} requests, +{report['step_chars']} characters each, prompt "
               f"{report['prompt_tokens'][0]}..{report['prompt_tokens'][1]} tokens, "
               f"{report['max_new_tokens']} new tokens")
    for name in ("reuse", "no_reuse"):
        typer.echo(f"{name:>9}: p50 {lat[name]['p50']} s, p95 {lat[name]['p95']} s, mean {lat[name]['mean']} s")
    typer.echo(f"with reuse / without: p50 x{report['p50_ratio']}, p95 x{report['p95_ratio']}; "
               f"{report['reused_prompt_tokens_mean']} prompt tokens reused per request after the first; "
               f"identical completions {report['identical_completions']}/{report['requests']}")
