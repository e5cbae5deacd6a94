"""The output folder of a training run, for every trainer: its lock, the checks made before any training,
and the one rule for what an existing folder holds (resume it, overwrite it, or refuse).

- One run per folder: an exclusive flock on OUTPUT/.greencode.lock, held for the whole run. It dies with
  its process, so a crashed run never leaves a stale lock behind; a folder this run created and left
  holding only the lock is removed again.
- Before the lock is taken (and so before any training), OUTPUT must be a folder this process can write
  in (or create); a --resume also needs its checkpoint folder writable, or it would train every step
  and then fail at the save.
- `resume_or_overwrite`: --resume continues an interrupted run, --overwrite replaces what is there,
  and neither refuses a folder that holds an interrupted run or finished results.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from greencode.errors import GreencodeError
from greencode.files.paths import check_writable

LOCK_NAME = ".greencode.lock"


def is_housekeeping(name: str) -> bool:
    """Files a run keeps for itself (the lock), not results: they do not make a folder 'already used'."""
    return name == LOCK_NAME


@contextlib.contextmanager
def output_lock(output: Path, command: str):
    """Hold OUTPUT's lock while the body runs; a second holder gets one line naming the first one's pid.
    OUTPUT is checked first (check_writable), so a folder that cannot be written is refused before any work."""
    import fcntl

    output = Path(output)
    check_writable(output)
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    handle = open(output / LOCK_NAME, "a+")
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
            if created and output.is_dir() and [entry.name for entry in output.iterdir()] == [LOCK_NAME]:
                shutil.rmtree(output, ignore_errors=True)  # nothing was written: leave no empty folder behind
    finally:
        handle.close()


def resume_or_overwrite(resume: bool, overwrite: bool, *, interrupted: str | None, results: Path | None,
                        nothing_to_resume: str, resumable_results: bool = False, progress: str = "") -> None:
    """The rule every trainer applies to its existing output, before any long work.

    interrupted: where an interrupted run that --resume would continue is (None when there is none), and
    progress how far it got ("200 steps");
    results: a finished result --overwrite would replace (None when none);
    nothing_to_resume: the line for a --resume with no interrupted run;
    resumable_results: the results' folder may also hold checkpoints, so --resume is offered for it too."""
    if resume and overwrite:
        raise GreencodeError("--resume and --overwrite exclude each other")
    if resume:
        if interrupted is None:
            raise GreencodeError(nothing_to_resume)
        return
    if overwrite:
        return
    if interrupted is not None:
        held = f" ({progress})" if progress else ""
        raise GreencodeError(f"{interrupted}: an interrupted run is here{held}; pass --resume to continue it or "
                             "--overwrite to start over")
    if results is not None:
        offer = "--resume to continue it, " if resumable_results else ""
        raise GreencodeError(f"{results}: already exists; pass {offer}--overwrite to replace it, or another --output")
