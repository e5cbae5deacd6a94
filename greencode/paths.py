"""Where greencode keeps converted models and other caches (XDG, overridable)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", delete=True)
        probe.close()
        return True
    except OSError:
        return False


def cache_dir(configured: str = "") -> Path:
    """$GREENCODE_CACHE, else [model].cache_dir, else $XDG_CACHE_HOME/greencode, else ~/.cache/greencode.

    An unwritable choice falls back to a directory under the system temp dir, and says so on stderr.
    """
    chosen = os.environ.get("GREENCODE_CACHE") or configured
    if not chosen:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        chosen = str(Path(xdg) / "greencode")
    path = Path(chosen).expanduser()
    if _writable(path):
        return path
    fallback = Path(tempfile.gettempdir()) / f"greencode-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"
    print(f"greencode: cache dir {path} is not writable; using {fallback} instead", file=sys.stderr)
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback
