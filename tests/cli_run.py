"""`greencode ...` run in this process through greencode.cli.main (the same error handling as the real
command: a GreencodeError is one 'greencode: error:' line and exit 2), with its output captured."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


def greencode(*args: str, cwd=None) -> Ran:
    """Run the CLI in-process; an unexpected exception propagates (a traceback is a test failure)."""
    from greencode.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, here, code = sys.argv, os.getcwd(), 0
    sys.argv = ["greencode", *map(str, args)]
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(here)
    return Ran(code, out.getvalue(), err.getvalue())
