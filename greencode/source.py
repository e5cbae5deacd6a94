"""The file being edited: open it safely, save it atomically (UI-free).

Text that is not UTF-8 opens read-only (decoded with replacement characters for display) and can never
be saved back, so the original bytes are never rewritten. Saving writes a temporary file in the same
directory, copies the original's permission bits onto it, and renames it over the original.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from greencode.errors import GreencodeError

LANGUAGES = {".py": "python", ".pyi": "python", ".java": "java"}
BINARY_PROBE_BYTES = 8192
HIGHLIGHT_MAX_LINES = 50_000  # past this, syntax highlighting is turned off to keep a huge file responsive


@dataclass(frozen=True)
class SourceFile:
    path: Path  # resolved, so saving through a symlink writes the file it points at
    text: str
    language: str | None  # a TextArea language name, or None for plain text
    read_only_reason: str = ""  # why edits are refused ("" = editable)
    exists: bool = True  # False for a new file created with --create (written on first save)
    note: str = ""  # shown to the user: large file, no write permission...
    shown: str = ""  # the path as the user gave it, for the title

    @property
    def read_only(self) -> bool:
        return bool(self.read_only_reason)

    @property
    def name(self) -> str:
        return self.shown or self.path.name


def language_for(path: Path, line_count: int = 0) -> str | None:
    if line_count > HIGHLIGHT_MAX_LINES:
        return None
    return LANGUAGES.get(path.suffix.lower())


def _write_note(path: Path) -> str:
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK) or not os.access(path.parent, os.W_OK):
        return "no write permission: you can edit, but saving here will fail"
    return ""


def open_source(file: str | os.PathLike, create: bool = False) -> SourceFile:
    """Read FILE for editing; every refusal is one GreencodeError line that says what to do."""
    path = Path(file).expanduser()
    if path.is_dir():
        raise GreencodeError(f"{file}: is a directory; give a file inside it, e.g. `greencode tui {path / 'main.py'}`")
    if not path.exists():
        if not path.parent.is_dir():
            raise GreencodeError(f"{file}: no such file, and its directory {path.parent} does not exist either")
        if not create:
            raise GreencodeError(f"{file}: no such file; create it with `greencode tui {file} --create` "
                                 f"(written on the first ctrl+s) or `touch {file}`")
        resolved = path.resolve()
        return SourceFile(resolved, "", language_for(resolved), exists=False, note=_write_note(resolved),
                          shown=str(file))
    resolved = path.resolve()
    if not resolved.is_file():
        raise GreencodeError(f"{file}: not a regular file (a device, socket or pipe); give a text file")
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise GreencodeError(f"{file}: cannot read it: {exc.strerror}; check its permissions") from None
    if b"\0" in data[:BINARY_PROBE_BYTES]:
        raise GreencodeError(f"{file}: looks like a binary file (it contains NUL bytes); greencode edits text files")
    try:
        text = data.decode("utf-8")
        reason = ""
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", errors="replace")
        reason = f"not valid UTF-8 (byte {exc.start}); opened read-only so it is never rewritten"
    lines = text.count("\n") + 1
    language = language_for(resolved, lines)
    notes = [_write_note(resolved)]
    if language is None and language_for(resolved):
        notes.append(f"{lines} lines: syntax highlighting off to stay responsive")
    return SourceFile(resolved, text, language, reason, True, "; ".join(filter(None, notes)), str(file))


def save_text(source: SourceFile, text: str) -> SourceFile:
    """Write atomically and keep the file's mode; raise GreencodeError with the reason on failure."""
    if source.read_only:
        raise GreencodeError(f"{source.path}: not saved: {source.read_only_reason}")
    path = source.path
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    except OSError:
        mode = None
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".greencode-tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        if mode is None:  # a new file gets the usual umask-derived mode, not mkstemp's 0600
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise GreencodeError(f"{path}: not saved: {exc.strerror or exc}; your changes are still in the editor") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return dataclasses.replace(source, text=text, exists=True)
