"""A real `greencode serve` app on a free loopback port, run by uvicorn in a thread (shared by the serve tests)."""

from __future__ import annotations

import contextlib
import json
import threading
import time

from greencode.config import load_config
from greencode.serve.app import build_app, listen_socket, make_server

PROMPT = "import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        return"


def serve_config(**serve):
    overrides = {"engine.max_new_tokens": 4, **{f"serve.{key}": value for key, value in serve.items()}}
    return load_config(None, overrides)


@contextlib.contextmanager
def running_server(engine, config, policy="full"):
    """Yield (base_url, app state) while a uvicorn server serves `engine` (default policy `policy`) on
    127.0.0.1:<free port>."""
    app = build_app(engine, config, policy)
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = make_server(app, sock, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app.state
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def sse_events(lines) -> list[dict]:
    """The JSON payloads of a server-sent event stream ('data:{...}' lines)."""
    return [json.loads(line[len("data:"):]) for line in lines if line.startswith("data:")]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
