"""How commands show progress: the one idiom. The library reports through callbacks (`progress(done,
total)`) and never draws; a command wraps the work in `progress_bar` or `working` and passes the update on.

On a terminal (stderr) these are rich's bar and spinner; otherwise (a log file, a pipe, CI) they are plain
lines on stderr for a bar (every 10% and at the end); a spinner shows nothing off a terminal. See docs/architecture.md 'Progress'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _console():
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def progress_bar(label: str, total: int, done: int = 0,
                 enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yields update(done, total=None, note=""): how far the work is (`total` may grow, `note` says where)."""
    if not enabled:
        yield lambda done, total=None, note="": None
        return
    console = _console()
    if not console.is_terminal:
        state = {"total": max(1, total), "step": -1}

        def report(done: int, total: int | None = None, note: str = "") -> None:
            if total:
                state["total"] = max(1, total)
            step = done * 10 // state["total"]
            if step != state["step"] or done >= state["total"]:
                state["step"] = step
                console.print(f"{label}: {min(done, state['total'])}/{state['total']}" + (f" {note}" if note else ""),
                              markup=False, highlight=False)

        if done:
            report(done)
        yield report
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[note]}"))
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=total, completed=done, note="")

        def update(done: int, total: int | None = None, note: str = "") -> None:
            bar.update(task, completed=done, note=note, **({"total": total} if total else {}))

        yield update


@contextmanager
def working(label: str) -> Iterator[None]:
    """Work without a count (loading a model): a spinner on a terminal, else nothing (a log gets the result,
    and an error stays the one line on stderr)."""
    console = _console()
    if not console.is_terminal:
        yield
        return
    with console.status(label):
        yield
