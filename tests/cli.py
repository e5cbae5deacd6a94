"""The one way tests run a `greencode …` command: in this process, through `greencode.cli.main`, with its
output captured and its exit code returned, as a subprocess would give them but without importing torch
and transformers again. Only what a subprocess alone can show (Ctrl-C and exit 130, --help without torch,
the hash seed, a real bind) starts one, through `run_subprocess`.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Ran:
    """What a command left: its exit code and what it wrote (the fields of subprocess.CompletedProcess)."""
    returncode: int
    stdout: str
    stderr: str


class _Stream(io.TextIOWrapper):
    """A text stream with a byte buffer beneath, as sys.stdout has (some writers use .buffer)."""

    def __init__(self):
        super().__init__(io.BytesIO(), encoding="utf-8", errors="replace", write_through=True)

    def text(self) -> str:
        self.flush()
        return self.buffer.getvalue().decode("utf-8", errors="replace")

    def isatty(self) -> bool:
        return False


def run_cli(*args: str, cwd: str | Path | None = None, env: dict | None = None) -> Ran:
    """`greencode ARGS` in this process: cwd and extra environment variables apply for the call only."""
    from greencode.cli import main

    out, err = _Stream(), _Stream()
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    saved_env = {key: os.environ.get(key) for key in (env or {})}
    sys.argv = ["greencode", *map(str, args)]
    os.environ.update({key: str(value) for key, value in (env or {}).items()})
    code = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, (int, type(None))):
                    print(exc.code, file=sys.stderr)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Ran(code, out.text(), err.text())


def run_subprocess(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python -m greencode.cli ARGS` in a new interpreter, with this checkout first on its path."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **kwargs.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "greencode.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, **kwargs)
