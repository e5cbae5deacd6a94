"""The resumable part of `greencode eval`: one JSON line per finished completion in OUT/completions.jsonl.

A run is identified by its fingerprint (model, corpus, protocol, exit points), kept in OUT/run.json. A
later run with the same fingerprint reuses every completion it finds (matched by sample key and by the
contestant's identity: policy, model, agent file), so an interrupted run continues where it stopped and
adding a policy or samples computes only what is new. A different fingerprint is refused unless the user
asks to restart, so no result is silently mixed with another run's or thrown away.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from greencode.files.atomic import atomic_write_text
from greencode.errors import GreencodeError

COMPLETIONS = "completions.jsonl"
RUN = "run.json"

def file_stamp(path: str) -> str:
    """Size and mtime of a file, or of a directory's weights and configs: changes when it is retrained."""
    target = Path(path).expanduser()
    if target.is_file():
        stat = target.stat()
        return f"{target.name}:{stat.st_size}:{int(stat.st_mtime)}"
    if target.is_dir():
        parts = [f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in sorted(target.iterdir())
                 if p.suffix in (".safetensors", ".json", ".bin")]
        return ";".join(parts)
    return ""

def read_completions(path: Path) -> dict[tuple[str, str], dict]:
    """The completions a run's completions.jsonl holds, by (sample key, contestant identity)."""
    records = {}
    with path.open("rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:  # a line cut short by an interrupt: that completion reruns
                continue
            records[(record["key"], record["identity"])] = record
    return records


class CompletionStore:
    def __init__(self, out: Path, fingerprint: dict, restart: bool = False):
        self.out = out
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GreencodeError(f"{out}: cannot create the output directory ({exc.strerror})") from None
        self.path = out / COMPLETIONS
        run_file = out / RUN
        if restart:
            for stale in (self.path, run_file):
                stale.unlink(missing_ok=True)
        if run_file.is_file():
            try:
                previous = json.loads(run_file.read_text())
            except (OSError, json.JSONDecodeError):
                raise GreencodeError(f"{run_file}: unreadable; pass --restart to start this output over") from None
            changed = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
            if changed:
                raise GreencodeError(f"{out} holds an evaluation with other settings ({', '.join(changed)}); "
                                     "pass --restart to replace it, or choose another --out")
        else:
            atomic_write_text(run_file, json.dumps(fingerprint, indent=2))
        self.records: dict[tuple[str, str], dict] = {}
        if self.path.is_file():
            with self.path.open("rb+") as handle:
                if handle.seek(0, os.SEEK_END) and (handle.seek(-1, os.SEEK_END), handle.read(1))[1] != b"\n":
                    handle.write(b"\n")  # end a line cut short by an interrupt, so appends start clean
            self.records = read_completions(self.path)

    def get(self, key: str, identity: str) -> dict | None:
        return self.records.get((key, identity))

    def add(self, record: dict) -> None:
        """Append one completion and flush it, so an interrupt loses at most the one in flight."""
        self.records[(record["key"], record["identity"])] = record
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
