"""Completion samples by the paper's protocol (VI-C): the context is the first share of a file's tokens
(at most `max_context` of them, the ones nearest the cut), the ground truth the next `target` tokens.

Used by `greencode bench`, `greencode eval` and the RL trajectory builder, so all three cut files alike.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    path: str
    language: str
    context_ids: list[int]
    target_ids: list[int]


def _order(paths: list[str], seed: int) -> list[int]:
    """A deterministic shuffle of file indices that depends only on the paths and the seed."""
    keyed = [(hashlib.sha256(f"{seed}:{p}".encode()).hexdigest(), i) for i, p in enumerate(paths)]
    return [i for _, i in sorted(keyed)]


def context_bounds(num_tokens: int, fraction: float, max_context: int) -> tuple[int, int]:
    """[start, cut) of a context: the first `fraction` of a file's tokens, at most `max_context` of them,
    the ones nearest the cut. The one cut rule of bench, eval and the RL trajectories."""
    cut = int(num_tokens * fraction)
    return max(0, cut - max_context), cut


def cut_file(ids: list[int], fraction: float, max_context: int, target: int) -> tuple[list[int], list[int]] | None:
    """(context, ground truth) for one file's tokens, or None when the file is too short to cut."""
    start, cut = context_bounds(len(ids), fraction, max_context)
    if cut < 1 or cut + target > len(ids):
        return None
    return ids[start:cut], ids[cut:cut + target]


def make_samples(files, tokenizer, count: int, fraction: float = 0.2, max_context: int = 512,
                 target: int = 15, min_context: int = 1, seed: int = 0,
                 fraction_range: tuple[float, float] | None = None) -> list[Sample]:
    """Up to `count` samples from `files` (CodeFile-like: path, text, language), deterministic in seed.

    With `fraction_range` the context share is drawn uniformly per file (the RL reset's [0.2, 0.6]).
    Files too short for `min_context` context tokens plus the target are passed over.
    """
    rng = random.Random(seed)
    samples: list[Sample] = []
    for index in _order([f.path for f in files], seed):
        if len(samples) >= count:
            break
        file = files[index]
        ids = tokenizer(file.text, add_special_tokens=False)["input_ids"]
        share = rng.uniform(*fraction_range) if fraction_range else fraction
        cut = cut_file(ids, share, max_context, target)
        if cut is None or len(cut[0]) < min_context:
            continue
        samples.append(Sample(file.path, file.language, *cut))
    return samples
