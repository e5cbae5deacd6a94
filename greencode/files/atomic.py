"""Write a file so that readers see the old version or the new one, never half of it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call write(temporary path) beside `path`, then rename it over `path`; the temporary never lingers."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, data: str | bytes) -> Path:
    payload = data if isinstance(data, bytes) else data.encode("utf-8")
    return atomic_write(path, lambda temporary: temporary.write_bytes(payload))
