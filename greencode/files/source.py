"""The file being edited: open it safely, save it atomically (UI-free).

Text that is not UTF-8 opens read-only (decoded with replacement characters for display) and can never
be saved back, so the original bytes are never rewritten. Saving writes a temporary file in the same
directory, copies the original's permission bits (and owner and group, where permitted) onto it, and
renames it over the original. A file with other hard links is written through in place instead (the
new text is kept in a recovery file beside it until the write is complete), so every name sees it.

Another program may change the file while it is open: its identity (mtime, size, SHA-256) is recorded
at open and checked before each save; a change raises FileChangedOnDisk and the caller asks the user.
Each line keeps its own ending: a file mixing LF and CRLF is saved with the same mix (the editor
holds one newline style; the original endings are put back on the lines they belonged to).
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import hashlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from greencode.errors import GreencodeError

LANGUAGES = {".py": "python", ".pyi": "python", ".java": "java"}
BINARY_PROBE_BYTES = 8192
HIGHLIGHT_MAX_LINES = 50_000  # past this, syntax highlighting is turned off to keep a huge file responsive


# The boundaries str.splitlines (and so the editor) breaks lines at; each line's own one is restored on save.
LINE_BREAK = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


class FileChangedOnDisk(GreencodeError):
    """The file was changed (or removed, or created) by another program since it was opened or saved."""


@dataclass(frozen=True)
class FileIdentity:
    mtime_ns: int
    size: int
    sha256: str

    @classmethod
    def of(cls, info: os.stat_result, data: bytes) -> "FileIdentity":
        return cls(info.st_mtime_ns, info.st_size, hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class SourceFile:
    path: Path  # resolved, so saving through a symlink writes the file it points at
    text: str
    language: str | None  # a TextArea language name, or None for plain text
    read_only_reason: str = ""  # why edits are refused ("" = editable)
    exists: bool = True  # False for a new file created with --create (written on first save)
    note: str = ""  # shown to the user: large file, no write permission...
    shown: str = ""  # the path as the user gave it, for the title
    identity: FileIdentity | None = None  # the file as last read or written (None: it did not exist)

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
        with open(resolved, "rb") as handle:
            info = os.fstat(handle.fileno())
            data = handle.read()
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
    return SourceFile(resolved, text, language, reason, True, "; ".join(filter(None, notes)), str(file),
                      FileIdentity.of(info, data))


def changed_on_disk(source: SourceFile) -> str:
    """"" if the file is as it was last read or written, else what happened to it (for the question)."""
    try:
        info = os.stat(source.path)
    except OSError:
        return ""  # deleted (saving loses nothing, it writes the file again) or unreadable (the save says why)
    if source.identity is None:
        return "was created by another program"
    if (info.st_mtime_ns, info.st_size) == (source.identity.mtime_ns, source.identity.size):
        return ""
    try:
        same = hashlib.sha256(source.path.read_bytes()).hexdigest() == source.identity.sha256
    except OSError:
        return ""
    return "" if same else "was changed by another program"


def restore_line_endings(original: str, edited: str) -> str:
    """`edited` (one newline style, from the editor) with each line's ending as it was in `original`.

    Lines are matched by content (difflib), so inserted and deleted lines do not shift the endings of the
    rest; a new line gets the file's most common ending."""
    old_lines, old_ends = LINE_BREAK.split(original), LINE_BREAK.findall(original)
    new_lines, new_ends = LINE_BREAK.split(edited), LINE_BREAK.findall(edited)
    if not old_ends or (len(set(old_ends)) == 1 and set(new_ends) <= set(old_ends)):
        return edited  # one style, and the editor kept it: nothing to restore
    usual = collections.Counter(old_ends).most_common(1)[0][0]
    ends: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes():
        for offset in range(j2 - j1):
            i = i1 + offset
            ends.append(old_ends[i] if tag != "insert" and i < i2 and i < len(old_ends) else usual)
    ends[-1] = ""  # the last line ends the file as the editor has it (with or without a final newline)
    return "".join(line + end for line, end in zip(new_lines, ends))


def _keep_owner(path_or_fd, info: os.stat_result | None) -> None:
    """Owner and group as before, where permitted (a user may keep the group; only root can give a file away)."""
    if info is None or not hasattr(os, "chown"):
        return
    for uid, gid in ((info.st_uid, info.st_gid), (-1, info.st_gid)):
        try:
            os.chown(path_or_fd, uid, gid)
            return
        except OSError:
            continue


def _write_temporary(path: Path, payload: bytes, mode: int, info: os.stat_result | None) -> str:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".greencode-tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp_name, mode)
    _keep_owner(tmp_name, info)
    return tmp_name


def _write_through_links(path: Path, payload: bytes, recovery: str) -> None:
    """Rewrite the file in place (every hard link sees it); the recovery copy is removed only after fsync."""
    fd = os.open(path, os.O_WRONLY)
    try:
        view, written = memoryview(payload), 0
        while written < len(payload):
            written += os.write(fd, view[written:])
        os.ftruncate(fd, len(payload))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.unlink(recovery)


def save_text(source: SourceFile, text: str, overwrite_changes: bool = False) -> SourceFile:
    """Write the text, keeping mode, owner, group, hard links and each line's ending.

    Raises FileChangedOnDisk if another program changed the file since it was read (unless
    `overwrite_changes`), and GreencodeError with the reason on any other failure."""
    if source.read_only:
        raise GreencodeError(f"{source.path}: not saved: {source.read_only_reason}")
    path = source.path
    if not overwrite_changes and (change := changed_on_disk(source)):
        raise FileChangedOnDisk(f"{path.name} {change} since it was opened")
    text = restore_line_endings(source.text, text) if source.exists else text
    payload = text.encode("utf-8")
    try:
        info = os.stat(path)
    except OSError:
        info = None
    if info is not None:
        mode = stat.S_IMODE(info.st_mode)
    else:  # a new file gets the usual umask-derived mode, not mkstemp's 0600
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    tmp_name = None
    try:
        tmp_name = _write_temporary(path, payload, mode, info)
        if info is not None and info.st_nlink > 1:
            try:
                _write_through_links(path, payload, tmp_name)
            except OSError as exc:
                kept, tmp_name = tmp_name, None  # the new text stays in the recovery file
                raise GreencodeError(f"{path}: not saved through its {info.st_nlink} hard links: "
                                     f"{exc.strerror or exc}; your text is in {kept} and still in the editor") from None
            tmp_name = None
        else:
            os.replace(tmp_name, path)
            tmp_name = None
        with open(path, "rb") as handle:
            identity = FileIdentity.of(os.fstat(handle.fileno()), handle.read())
    except OSError as exc:
        raise GreencodeError(f"{path}: not saved: {exc.strerror or exc}; your changes are still in the editor") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return dataclasses.replace(source, text=text, exists=True, identity=identity)
