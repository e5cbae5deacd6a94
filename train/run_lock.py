"""One training run per output folder: an exclusive lock file inside it, held for the whole run.

Two runs sharing a folder would delete each other's checkpoints (--overwrite) or interleave files. The
lock is an flock on OUTPUT/.greencode.lock, so it dies with its process: a crashed run never leaves a
stale lock behind. A folder this run created and left holding only the lock is removed again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from greencode.errors import GreencodeError

LOCK_NAME = ".greencode.lock"


@contextlib.contextmanager
def output_lock(output: Path, command: str):
    """Hold OUTPUT's lock while the body runs; a second holder gets one line naming the first one's pid."""
    import fcntl

    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    path = output / LOCK_NAME
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise GreencodeError(f"{output}: another `{command}` (pid {holder}) is using this folder; wait for it "
                                 "to finish or choose another --output") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            if created and [entry.name for entry in output.iterdir()] == [LOCK_NAME]:
                shutil.rmtree(output, ignore_errors=True)  # nothing was written: leave no empty folder behind
    finally:
        handle.close()


def is_housekeeping(name: str) -> bool:
    """Files a run keeps for itself (the lock), not results: they do not make a folder 'already used'."""
    return name == LOCK_NAME
