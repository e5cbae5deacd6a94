"""A bad-input sweep (issue 26): inputs a new user or an attacker might try, across the CLI, the trainers,
the server and the playground, each classified. Tracebacks, 5xx answers, lost data and hangs must all be 0.

    cd REPO && PYTHONPATH=. OMP_NUM_THREADS=1 nice -n 10 python docs/bad_input_sweep.py [cli,server,tui]

CLI and trainer cases run `greencode.cli.main` in a forked child each (killed after TIMEOUT_S: a hang), the
server cases against a real uvicorn server in this process (httpx and raw sockets), the playground cases
through Textual's Pilot with the real tiny model. It prints one line per case that failed and the counts.

Last run, 2026-12-06, 2 shared cores (load average 5-6): 204 inputs (127 CLI and trainers, 54 server,
23 playground), 0 tracebacks, 0 5xx, 0 lost data, 0 hangs, 0 errors longer than one line; 462 s. Before its
fixes it found a 500 (half a surrogate pair in a prompt), a traceback (agent.net_arch [-1]) and a train
agent --output into someone else's folder (whose logs/ the finished run would have replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import select
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

TIMEOUT_S = 180
TINY = ["--model", "tiny-random-llama"]
RESULTS = {"cases": 0, "tracebacks": 0, "5xx": 0, "lost data": 0, "hangs": 0, "not one line": 0}
FAILURES: list[str] = []


def _fail(kind: str, case: str, detail: str) -> None:
    RESULTS[kind] += 1
    FAILURES.append(f"{kind}: {case}: {detail[-300:]}")


def _digest(paths: list[Path]) -> dict:
    found = {}
    for root in paths:
        for path in sorted(root.rglob("*") if root.is_dir() else [root]):
            if path.is_file() and not path.name.startswith(".greencode"):
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# -- the CLI and the trainers: one forked child per case ----------------------------------------------

def _child(args: list[str], cwd: Path, write_fd: int) -> None:
    from greencode.cli import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        os.chdir(cwd)
        sys.argv = ["greencode", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - what escaped main is what the sweep counts
        err.write("\nTraceback (escaped main):\n" + traceback.format_exc())
        code = 99
    payload = json.dumps({"code": code, "stderr": err.getvalue()[-4000:]}).encode()
    while payload:
        payload = payload[os.write(write_fd, payload):]
    os._exit(0)


def run_cli_case(args: list[str], cwd: Path, keep: list[Path] = ()) -> None:
    RESULTS["cases"] += 1
    name = "greencode " + " ".join(args)
    before = _digest(list(keep))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(args, cwd, write_fd)
    os.close(write_fd)
    chunks, deadline = [], time.monotonic() + TIMEOUT_S
    while True:
        ready = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))[0]
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_fd)
            return _fail("hangs", name, f"no answer in {TIMEOUT_S} s")
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    try:
        result = json.loads(b"".join(chunks))
    except ValueError:
        return _fail("tracebacks", name, "the child died without an answer")
    stderr, code = result["stderr"], result["code"]
    if code == 99 or "Traceback" in stderr:
        _fail("tracebacks", name, stderr)
    elif code == 2 and stderr.startswith("greencode: error:") and len(stderr.strip().splitlines()) != 1:
        _fail("not one line", name, stderr)
    if _digest(list(keep)) != before:
        _fail("lost data", name, "a file it had to leave alone changed")


def cli_cases(root: Path) -> list[tuple[list[str], list[Path]]]:
    code = root / "a.py"
    code.write_text("import os\n\n\ndef main():\n    return os.getcwd()\n")
    (root / "empty.py").write_text("")
    (root / "blank.py").write_text("\n\n\n")
    (root / "binary.py").write_bytes(b"\x00\xff\xfe" * 100)
    (root / "latin1.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    (root / "crlf.py").write_bytes(b"def f():\r\n    return 1\r\n")
    (root / "dir.py").mkdir()
    (root / "loop.py").symlink_to(root / "loop.py")
    (root / "notes.txt").write_text("precious")
    precious = root / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"m{i}.py").write_text("".join(f"def f{k}(a):\n    return a * {k}\n\n" for k in range(30)))
    (root / "empty-corpus").mkdir()
    (root / "cfg.toml").write_text("[engine\nmax_new_tokens = ")
    (root / "bin.toml").write_bytes(b"\xff\xfe\x00")
    keep = [precious, root / "notes.txt", code]
    c = ["complete", str(code), *TINY, "--max-new-tokens", "2"]
    cases = [[*c[:2], *TINY, "--at", at] for at in ("0:1", "-1:1", "1:-1", "abc", "1:", ":5", "2:0", "99999999999999999999:1",
                                                    "1:99999999999999999999", "1:1:1")]
    cases += [["complete", str(root / name), *TINY] for name in ("missing.py", "dir.py", "binary.py", "empty.py",
                                                                  "blank.py", "loop.py", "latin1.py", "crlf.py")]
    cases += [["complete", "/dev/zero", *TINY], ["complete", "/proc/self/status", *TINY]]
    cases += [[*c, "--policy", p] for p in ("", "fixed:", "fixed:-1", "fixed:999", "fixed:4.5", "confidence:2",
                                            "confidence:nan", "entropy:-1", "agent:0.5", "oracle", "warp:1", "full:3")]
    cases += [[*c, "--policy", "confidence", "--threshold", t] for t in ("nan", "inf", "-1", "2")]
    cases += [[*c[:2], *TINY, "--max-new-tokens", n] for n in ("0", "-1", "1000000000000000000000", "x")]
    cases += [[*c, f"--engine.{key}", value] for key, value in (
        ("temperature", "-1"), ("temperature", "nan"), ("temperature", "inf"), ("temperature", "1e39"),
        ("top_p", "0"), ("top_p", "2"), ("top_p", "nan"), ("seed", "-1"), ("seed", "99999999999999999999999"),
        ("max_context_tokens", "0"), ("nope", "1"), ("max_new_tokens", "abc"))]
    cases += [["complete", str(code), "--model", m] for m in ("", "/no/such/dir", str(root / "notes.txt"),
                                                              str(precious), "x.gguf", "../../etc")]
    cases += [["--config", str(p), *c] for p in (root / "missing.toml", root / "dir.py", root / "bin.toml",
                                                 root / "cfg.toml")]
    cases += [["info", "--model.device", d] for d in ("bogus", "cuda:99", "")]
    e = ["eval", *TINY, "--corpus", str(corpus), "--split", "all", "--quiet", "--thresholds", ""]
    cases += [[*e, "--samples", s] for s in ("0", "-1")]
    cases += [[*e, "--policies", p, "--out", str(root / "ev")] for p in ("", ",,", "oracle", "bogus", "fixed:99")]
    cases += [[*e, "--thresholds", t, "--out", str(root / "ev")] for t in ("abc", "2", "nan")]
    cases += [[*e, "--split", "nope"], [*e, "--corpus", str(root / "empty-corpus"), "--out", str(root / "ev")],
              [*e, "--corpus", "/no/such", "--out", str(root / "ev")], [*e, "--policies", "full", "--out",
                                                                        str(root / "notes.txt")]]
    b = ["bench", *TINY, "--no-llama-cpp", "--prompts", "1"]
    cases += [[*b, "--policies", p] for p in ("", "oracle", "bogus")]
    cases += [[*b, "--max-new-tokens", "0"], ["bench", *TINY, "--prompts", "0"], [*b, "--min-context", "100000"]]
    cases += [["serve", *TINY, "--port", p] for p in ("70000", "-1", "x")]
    cases += [["serve", *TINY, "--host", "0.0.0.0"], ["serve", *TINY, "--host", "no such host!"]]
    cases += [["tui", str(root / name), *TINY] for name in ("missing.py", "dir.py")]
    cases += [["tui", str(code), *TINY, "--policy", "warp"], ["tui", str(code), *TINY, "--threshold", "2"],
              ["tui", str(code), *TINY, "--agent", "/no/agent.safetensors"]]
    t = ["train"]
    cases += [[*t, "finetune", *TINY, "--output", str(p)] for p in (precious, root / "notes.txt",
                                                                      root / "notes.txt" / "x")]
    cases += [[*t, "finetune", *TINY, "--output", str(root / "ft"), *extra] for extra in (
        ["--max-steps", "-2"], ["--resume"], ["--resume", "--overwrite"], ["--finetune.seq_len", "1"],
        ["--corpus", "/no/such"], ["--corpus", str(root / "empty-corpus")], ["--finetune.weights", "[1, 2]"],
        ["--finetune.seed", "-1"], ["--finetune.learning_rate", "5"], ["--finetune.lora", "maybe"])]
    small = ["--agent.samples", "2", "--agent.tokens_per_sample", "2", "--data.corpus", str(corpus),
             "--data.validation_fraction", "0", "--data.test_fraction", "0"]
    cases += [[*t, "agent", *TINY, *small, "--output", str(root / "ag"), *extra] for extra in (
        ["--timesteps", "0"], ["--timesteps", "-5"], ["--timesteps", "x"], ["--resume"],
        ["--agent.n_steps", "1"], ["--agent.net_arch", "[-1]"], ["--agent.seed", "99999999999999"],
        ["--trajectories", str(root / "notes.txt")], ["--trajectories", str(root / "ag")])]
    cases += [[*t, "agent", *TINY, "--output", str(precious)]]
    cases += [[*t, "trajectories", *TINY, "--output", str(root / "tr"), *extra] for extra in (
        ["--samples", "0"], ["--tokens", "0"], ["--samples", "-3"], ["--data.corpus", str(root / "empty-corpus")])]
    cases += [[*t, "trajectories", *TINY, "--output", str(root / "notes.txt")]]
    cases += [[*t, "default", "--output", str(p)] for p in (root / "notes.txt", root / "notes.txt" / "x")]
    cases += [[*t, "default", "--from", "/no/such", "--output", str(root / "df")],
              [*t, "default", "--install-only", "--output", str(root / "empty-corpus")]]
    return [(case, keep) for case in cases]


# -- the server: a real uvicorn server in a thread, httpx and raw sockets ------------------------------

def server_cases() -> list[tuple]:
    p = "def add(a, b):\n    return"
    big = {"inputs": "x = 1\n" * 20_000}
    bodies = [
        ("/generate", b"not json"), ("/generate", b"[]"), ("/generate", b"null"), ("/generate", b'{"inputs": null}'),
        ("/generate", b'{"inputs": "x", "parameters": {"temperature": NaN}}'),
        ("/generate", b'{"inputs": "x", "parameters": {"top_p": Infinity}}'),
        ("/generate", b'{"inputs": "x", "parameters": {"seed": ' + b"9" * 5000 + b"}}"),
        ("/generate", json.dumps({"inputs": "\ud800 lone surrogate"}).encode()),
        ("/generate", json.dumps({"inputs": p + "\x00"}).encode()),
        ("/generate", json.dumps({"inputs": "😀" * 500}).encode()),
        ("/generate", json.dumps(big).encode()),
        ("/generate", json.dumps({"inputs": p, "parameters": {"max_new_tokens": 10**30}}).encode()),
        ("/generate", json.dumps({"inputs": p, "parameters": {"max_new_tokens": 1.5}}).encode()),
        ("/generate", json.dumps({"inputs": p, "parameters": {"stop": "x"}}).encode()),
        ("/generate", json.dumps({"inputs": p, "parameters": {"stop": [""] * 3}}).encode()),
        ("/generate", json.dumps({"inputs": p, "parameters": {"stop": ["a"] * 100}}).encode()),
        ("/generate", json.dumps({"inputs": p, "parameters": {"greencode": {"policy": "warp"}}}).encode()),
        ("/generate", json.dumps({"inputs": p, "parameters": {"greencode": {"policy": "confidence",
                                                                             "threshold": 7}}}).encode()),
        ("/generate", json.dumps({"inputs": p, "parameters": {"temperature": 1e39, "do_sample": True}}).encode()),
        ("/generate", json.dumps({"inputs": p, "parameters": {"temperature": 5e-324}}).encode()),
        ("/generate", json.dumps({"inputs": "<fim_prefix><fim_suffix>x<fim_middle>"}).encode()),
        ("/generate", json.dumps({"inputs": "<fim_suffix>a<fim_prefix>b<fim_middle>"}).encode()),
        ("/generate", json.dumps({"inputs": "<PRE> a <SUF>b <MID><fim_middle>"}).encode()),
        ("/generate_stream", json.dumps({"inputs": p, "parameters": {"seed": -1}}).encode()),
        ("/generate_stream", json.dumps({"inputs": p, "parameters": {"temperature": 50, "seed": 3}}).encode()),
        ("/v1/completions", json.dumps({"prompt": ["a", "b"]}).encode()),
        ("/v1/completions", json.dumps({"prompt": "", "suffix": "x"}).encode()),
        ("/v1/completions", json.dumps({"prompt": p, "n": 2}).encode()),
        ("/v1/completions", json.dumps({"prompt": p, "logprobs": 3, "echo": True}).encode()),
        ("/v1/completions", json.dumps({"prompt": p, "max_tokens": -1, "stream": True}).encode()),
        ("/v1/completions", json.dumps({"prompt": p, "temperature": 1e39, "stream": True}).encode()),
        ("/v1/completions", json.dumps({"prompt": p, "seed": 2**64}).encode()),
        ("/v1/completions", json.dumps({"prompt": p, "stop": [""] * 40}).encode()),
        ("/api/generate", json.dumps({"prompt": p, "options": {"num_predict": -3}}).encode()),
        ("/api/generate", json.dumps({"prompt": p, "options": {"stop": "x"}, "stream": False}).encode()),
        ("/api/generate", json.dumps({"prompt": "", "suffix": "", "stream": False}).encode()),
        ("/api/generate", json.dumps({"prompt": p, "options": {"temperature": -0.0, "top_p": 0}}).encode()),
        ("/api/show", b'{"name": 5}'), ("/api/show", b"{}"),
        ("/models/x/y", json.dumps({"inputs": p}).encode()), ("/", b"\xff\xfe"),
    ]
    raw = [b"GET /health HTTP/1.1\r\n\r\n", b"POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\n",
           b"POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999999999999999\r\n\r\n",
           b"POST /generate HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
           b"GARBAGE\r\n\r\n", b"GET /info HTTP/1.1\r\nHost: evil.example\r\n\r\n",
           b"GET /../../etc/passwd HTTP/1.1\r\nHost: localhost\r\n\r\n"]
    gets = ["/health", "/info", "/v1/models", "/api/tags", "/api/version", "/nope", "/generate"]
    return [("POST", path, body) for path, body in bodies] + [("RAW", "", r) for r in raw] + [
        ("GET", path, b"") for path in gets]


def run_server_cases() -> None:
    import httpx

    from greencode.config import load_config
    from greencode.decoding.engine import EarlyExitEngine
    from greencode.model.load import load_model
    from greencode.serve.app import build_app, listen_socket, make_server

    config = load_config(None, {"engine.max_new_tokens": 3, "serve.max_new_tokens_cap": 4})
    app = build_app(EarlyExitEngine(load_model("tiny-random-llama", device="cpu")), config, "full")
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = make_server(app, sock, log_level="critical")
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    for method, path, body in server_cases():
        RESULTS["cases"] += 1
        name = f"{method} {path} {body[:60]!r}"
        try:
            if method == "RAW":
                with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
                    raw.sendall(body)
                    answer = raw.recv(65536)
                status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
                text = answer.decode("latin-1")
            else:
                response = httpx.request(method, url + path, content=body or None, timeout=60,
                                         headers={"content-type": "application/json"} if body else {})
                status, text = response.status_code, response.text
        except (httpx.TimeoutException, socket.timeout):
            _fail("hangs", name, "no answer in 60 s")
            continue
        if status >= 500:
            _fail("5xx", name, f"{status} {text[:200]}")
        elif status == 200 and ('"error"' in text or "Traceback" in text):
            _fail("5xx", name, f"an error inside a 200: {text[:200]}")
    server.should_exit = True


# -- the playground: Pilot with the real tiny model ---------------------------------------------------

async def _tui_case(path: Path, keys: list[str], create: bool = False) -> None:
    from greencode.decoding.engine import EarlyExitEngine
    from greencode.files.source import open_source
    from greencode.model.load import load_model
    from tui.app import GreencodeApp
    from tui.settings import TuiSettings

    source = open_source(path, create=create)
    before = path.read_bytes() if path.is_file() else None
    app = GreencodeApp(source, TuiSettings(model_spec="tiny-random-llama", policy_kind="confidence", idle_ms=0),
                       lambda: EarlyExitEngine(load_model("tiny-random-llama", device="cpu"), token_healing=True))
    async with app.run_test(size=(100, 30)) as pilot:
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.05)
        await pilot.pause(0.5)
    if "ctrl+s" not in keys and before is not None and path.read_bytes() != before:
        raise AssertionError("the file changed without a save")


def run_tui_cases(root: Path) -> None:
    from greencode.errors import GreencodeError

    files = {"empty.py": b"", "binary.py": b"\x00\xff" * 50, "latin1.py": "s = 'caf\xe9'\n".encode("latin-1"),
             "crlf.py": b"def f():\r\n    return 1\r\n", "long.py": b"x = '" + b"y" * 200_000 + b"'\n",
             "tabs.py": b"def f():\n\treturn 1\n", "ok.py": b"def add(a, b):\n    return a + b\n\n\ndef main():\n    pri"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    ok = root / "ok.py"
    cases = [(root / name, ["f5", "f6", "escape", "f4", "escape"]) for name in files]
    cases += [(ok, keys) for keys in (["f6"], ["f7", "escape"], ["ctrl+g", "a", "b", "c", "enter"],
                                      ["ctrl+g", "0", "enter"], ["ctrl+g", "9", "9", "9", "9", "9", "enter", "escape"],
                                      ["f9"] * 15 + ["f5"], ["f8"] * 15 + ["f5"], ["f3"] * 7 + ["f5", "tab"],
                                      ["f2", "f5", "escape", "escape", "tab", "tab"],
                                      ["f5", "a", "f5", "backspace", "f5", "ctrl+right", "ctrl+l"],
                                      ["f1", "f5", "escape"], ["home", "f5", "f4", "escape"],
                                      ["ctrl+a", "delete", "f5", "f4", "f6", "f7"])]
    cases += [(root / "new" / "x.py", ["f5", "a"]), (root / "made.py", ["f5"])]
    for path, keys in cases:
        RESULTS["cases"] += 1
        name = f"tui {path.name} {' '.join(keys)}"
        try:
            asyncio.run(asyncio.wait_for(_tui_case(path, keys, create=path.name == "made.py"), TIMEOUT_S))
        except GreencodeError:
            pass  # refused in one line before the app starts (a missing folder): as the CLI says it
        except asyncio.TimeoutError:
            _fail("hangs", name, f"not done in {TIMEOUT_S} s")
        except AssertionError as exc:
            _fail("lost data", name, str(exc))
        except Exception:  # noqa: BLE001 - a crash of the app is what the sweep counts
            _fail("tracebacks", name, traceback.format_exc())


def main() -> None:
    parts = sys.argv[1].split(",") if len(sys.argv) > 1 else ["cli", "server", "tui"]
    started = time.monotonic()
    import greencode.cli  # noqa: F401 - imported once here, so each forked case starts warm
    import greencode.decoding.engine  # noqa: F401
    import greencode.model.load  # noqa: F401
    import transformers  # noqa: F401
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        if "cli" in parts:  # first: children fork from a process that has run no torch threads yet
            for args, keep in cli_cases(root):
                run_cli_case(args, root, keep)
        if "server" in parts:
            run_server_cases()
        if "tui" in parts:
            (root / "tui").mkdir()
            run_tui_cases(root / "tui")
    for line in FAILURES:
        print(line)
    print(json.dumps({**RESULTS, "seconds": round(time.monotonic() - started)}))


if __name__ == "__main__":
    main()
