"""A trajectory cache build that survives Ctrl-C: recorded samples are kept in DIR/partial/.

Every FLUSH_EVERY samples (and on Ctrl-C) the samples recorded since the last flush are written as one
npz chunk (no pickles), then progress.json (atomically) lists the chunks, the sample sources and the
settings they were built with. A rerun with the same settings replays the sampler's random draws for
the samples already recorded (so the finished cache equals an uninterrupted build) and records only
the rest; other settings are one clear error. The finished cache is written by save_cache, and
partial/ is removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from greencode.files.atomic import atomic_write, atomic_write_text
from greencode.errors import GreencodeError

PARTIAL = "partial"
PROGRESS = "progress.json"
FLUSH_EVERY = 8  # samples per chunk: at most this many samples' generation is lost to a hard kill


class PartialCache:
    def __init__(self, directory: str | Path, settings: dict):
        self.dir = Path(directory) / PARTIAL
        self.settings = json.loads(json.dumps(settings))  # as it reads back from JSON
        self.chunks: list[str] = []
        self.restored: tuple = ([], [], [], [], [])  # observations, exit_top1, final_top1, sample, sources
        self._live: tuple | None = None
        self.samples_kept = 0
        self._tokens_kept = 0

    @classmethod
    def open(cls, directory: str | Path, settings: dict, fresh: bool = False) -> "PartialCache":
        """What an interrupted build left (nothing when fresh, or when there is none)."""
        part = cls(directory, settings)
        if fresh:
            shutil.rmtree(part.dir, ignore_errors=True)
        progress = part.dir / PROGRESS
        if not progress.is_file():
            return part
        try:
            recorded = json.loads(progress.read_text())
            arrays = [np.load(part.dir / name, allow_pickle=False) for name in recorded["chunks"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GreencodeError(f"{progress}: an interrupted build is unreadable ({exc}); pass "
                                 "--rebuild-trajectories (or --force) to start over") from None
        if recorded.get("settings") != part.settings:
            changed = sorted(key for key in part.settings if recorded.get("settings", {}).get(key) != part.settings[key])
            raise GreencodeError(f"{part.dir}: an interrupted build for other settings ({', '.join(changed)}) is "
                                 "here; pass --rebuild-trajectories (or --force) to start over")
        observations, exit_top1, final_top1, sample = [], [], [], []
        for data in arrays:
            observations += list(data["observations"])
            exit_top1 += list(data["exit_top1"])
            final_top1 += [int(v) for v in data["final_top1"]]
            sample += [int(v) for v in data["sample"]]
        part.chunks = list(recorded["chunks"])
        part.restored = (observations, exit_top1, final_top1, sample, list(recorded["sources"]))
        part.samples_kept, part._tokens_kept = len(recorded["sources"]), len(final_top1)
        return part

    def record(self, observations: list, exit_top1: list, final_top1: list, sample: list, sources: list) -> None:
        """Called after each new sample with the build's lists; flushes every FLUSH_EVERY samples."""
        self._live = (observations, exit_top1, final_top1, sample, sources)
        if len(sources) - self.samples_kept >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Write the samples recorded since the last flush (called on Ctrl-C too)."""
        if self._live is None or len(self._live[4]) == self.samples_kept:
            return
        observations, exit_top1, final_top1, sample, sources = self._live
        new = slice(self._tokens_kept, len(final_top1))
        width = observations[0].shape if observations else (0, 0)
        arrays = {"observations": np.asarray(observations[new], dtype=np.float32).reshape(-1, *width),
                  "exit_top1": np.asarray(exit_top1[new], dtype=np.int64).reshape(-1, width[0]),
                  "final_top1": np.asarray(final_top1[new], dtype=np.int64),
                  "sample": np.asarray(sample[new], dtype=np.int64)}
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"chunk-{len(self.chunks):05d}.npz"

        def write(path: Path) -> None:
            with open(path, "wb") as handle:
                np.savez(handle, **arrays)

        atomic_write(self.dir / name, write)
        self.chunks.append(name)
        self.samples_kept, self._tokens_kept = len(sources), len(final_top1)
        atomic_write_text(self.dir / PROGRESS, json.dumps({"settings": self.settings, "chunks": self.chunks,
                                                           "sources": sources}, indent=1))

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
