"""Where greencode keeps converted models and other caches (XDG, overridable), and whether an output folder
can be written before any work is done for it."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from greencode.errors import GreencodeError


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
    fallback = private_temp_dir()
    print(f"greencode: cache dir {path} is not writable; using {fallback} instead", file=sys.stderr)
    return fallback


def private_temp_dir() -> Path:
    """$TMP/greencode-cache-<uid>, created 0700, used only if it is our own real directory.

    The name is predictable, so another local user could create it first (or a symlink by that name)
    and plant weights there; such a directory is refused and a fresh mkdtemp one is used instead."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    shared = Path(tempfile.gettempdir()) / f"greencode-cache-{uid if uid is not None else 0}"
    try:
        os.mkdir(shared, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return Path(tempfile.mkdtemp(prefix="greencode-cache-"))
    try:
        info = os.lstat(shared)
    except OSError:
        return Path(tempfile.mkdtemp(prefix="greencode-cache-"))
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or (uid is not None and info.st_uid != uid):
        fresh = Path(tempfile.mkdtemp(prefix="greencode-cache-"))
        print(f"greencode: {shared} is not a directory of yours (a symlink or another user's); "
              f"using {fresh} instead", file=sys.stderr)
        return fresh
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(shared, 0o700)  # ours, but readable by others: close it
    return shared


def _probe(folder: Path) -> OSError | None:
    """Create and remove a file in `folder`: the only test that sees read-only mounts, immutable folders and
    ACLs the same way the run's own writes will (os.access misses some of them, and root passes it)."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".greencode-probe-")
    except OSError as exc:
        return exc
    os.close(handle)
    os.unlink(name)
    return None


def check_writable(folder: Path, option: str = "--output") -> None:
    """One line unless `folder` is (or can be created as) a folder this process can write in."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GreencodeError(f"{folder}: exists and is not a directory; choose another {option}")
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise GreencodeError(f"{folder}: {existing} is a file, not a directory; choose another {option}")
    failure = _probe(existing)
    if failure is not None:
        what = "is not writable" if existing == folder else f"cannot be created ({existing} is not writable)"
        raise GreencodeError(f"{folder}: {what}: {failure.strerror or failure}; choose another {option}")
