"""The calibration corpus and its hidden-state cache: what the exit maps and the shortlist are fitted on.

Corpus: Python (the stdlib) and Java (a JDK's lib/src.zip), each split by path hash (greencode/data.py);
only the train and validation splits are read here, so the test split stays for `greencode eval`.

State cache: the frozen model runs once over windows of the corpus and keeps, per token, the hidden state
at every exit point and after the last layer (float16, to fit in memory), plus the final layer's top-k
log-probabilities over the full vocabulary (float32; the distillation target) and its top-1.
Saved as part files of PART_WINDOWS windows, so a stopped run resumes and a later build reuses them instead of
running the model again; they are read back into tensors allocated once (a million tokens take ~12 GB).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path


from greencode.files.atomic import atomic_write
from greencode.errors import GreencodeError

LANGUAGES = ("python", "java")
TARGET_TOP_K = 64  # final-layer log-probs kept per token: nearly all the mass of a 135M model's next token
WINDOWS_PER_FILE = 2  # windows drawn per file, at seeded offsets: many files rather than a few long ones
STATES_FORMAT = "greencode-calibration-states/1"
PART_WINDOWS = 32  # windows per part file of the state cache (a stopped run resumes from its parts)


def jdk_src_zips(root: Path = Path("/usr/lib/jvm")) -> tuple[Path | None, list[str]]:
    """(a real JDK lib/src.zip or None, notes on the JDKs looked at: dangling links and missing ones)."""
    candidates = []
    javac = shutil.which("javac")
    if javac:
        candidates.append(Path(os.path.realpath(javac)).parent.parent / "lib" / "src.zip")
    if root.is_dir():  # not glob: it hides dangling links, which the manifest should name
        candidates += [jdk / "lib" / "src.zip" for jdk in sorted(root.iterdir())]
    notes, found = [], None
    for candidate in dict.fromkeys(candidates):
        if candidate.is_file():  # is_file() follows links, so a dangling one is skipped
            found = found or candidate
        elif candidate.is_symlink():
            notes.append(f"{candidate}: dangling link to {os.readlink(candidate)}")
        elif candidate.parent.is_dir():
            notes.append(f"{candidate}: absent")
    return found, notes


def calibration_corpus(config, split: str) -> dict[str, list]:
    """{language: files of `split`} for the stdlib (Python) and a JDK's src.zip (Java).

    A corpus without one of the two languages is bad input: one line naming it.
    """
    from greencode.data import load_split

    data = config.data
    by_language: dict[str, list] = {}
    if data.corpus == "stdlib":
        java_zip, notes = jdk_src_zips()
        if java_zip is None:
            raise GreencodeError("calibration corpus: no JDK lib/src.zip found under /usr/lib/jvm or beside javac "
                                 f"({'; '.join(notes) or 'no JDK installed'}); install a JDK with its sources "
                                 "(e.g. openjdk-17-source) or set data.corpus to a directory with .py and .java files")
        python = load_split(dataclasses.replace(data, language="python"), split)
        java = load_split(dataclasses.replace(data, corpus=str(java_zip), language="java"), split)
        by_language = {"python": list(python), "java": list(java)}
    else:
        for file in load_split(dataclasses.replace(data, language="auto"), split):
            by_language.setdefault(file.language, []).append(file)
    for language in LANGUAGES:
        if not by_language.get(language):
            raise GreencodeError(f"calibration corpus {data.corpus}: no {language} files in its {split} split; "
                                 "calibration needs both Python and Java (point data.corpus at stdlib or a "
                                 "directory holding both)")
    return {language: by_language[language] for language in LANGUAGES}


def corpus_description(config, train: dict[str, list], validation: dict[str, list]) -> dict:
    """What the manifest says about the corpus: sources, files per split and language, JDK notes."""
    java_zip, notes = jdk_src_zips()
    stdlib = config.data.corpus == "stdlib"
    return {"python": "stdlib" if stdlib else config.data.corpus,
            "java": (str(java_zip) if java_zip else "none found") if stdlib else config.data.corpus,
            "jdk_notes": notes or ["none"], "split": "by path hash (greencode/data.py); the test split is never read",
            "train_files": {lang: len(files) for lang, files in train.items()},
            "validation_files": {lang: len(files) for lang, files in validation.items()}}


def windows(files: list, tokenizer, seq_len: int, max_tokens: int, seed: int) -> list[list[int]]:
    """Up to max_tokens of seq_len-token windows, WINDOWS_PER_FILE per file at seeded offsets, files shuffled."""
    rng = random.Random(seed)
    order = list(files)
    rng.shuffle(order)
    out: list[list[int]] = []
    for file in order:
        ids = tokenizer(file.text, add_special_tokens=False)["input_ids"]
        if len(ids) < seq_len:
            continue
        starts = sorted({rng.randrange(0, len(ids) - seq_len + 1) for _ in range(WINDOWS_PER_FILE)})
        for start in starts:
            out.append(ids[start:start + seq_len])
            if len(out) * seq_len >= max_tokens:
                return out
    return out


@dataclass
class CalibrationStates:
    """Per token: states at each exit point and after the last layer, and the final layer's targets."""

    exits: dict[int, "torch.Tensor"]  # layer -> (N, d) float16
    final: "torch.Tensor"  # (N, d) float16, before the final norm
    target_ids: "torch.Tensor"  # (N, k) int64: the final layer's top-k token ids (full vocabulary)
    target_logprobs: "torch.Tensor"  # (N, k) float32: their log-probabilities (full-vocabulary softmax)
    language: "torch.Tensor"  # (N,) int64: index into LANGUAGES

    @property
    def count(self) -> int:
        return int(self.final.shape[0])

    @property
    def final_top1(self):
        return self.target_ids[:, 0]

    def only(self, language: str) -> "CalibrationStates":
        mask = self.language == LANGUAGES.index(language)
        return CalibrationStates({p: h[mask] for p, h in self.exits.items()}, self.final[mask],
                                 self.target_ids[mask], self.target_logprobs[mask], self.language[mask])

    def spread(self, count: int) -> "CalibrationStates":
        """About `count` tokens taken at an even stride, so they span every window and file."""
        rows = slice(None, None, max(1, self.count // max(count, 1)))
        return CalibrationStates({p: h[rows] for p, h in self.exits.items()}, self.final[rows],
                                 self.target_ids[rows], self.target_logprobs[rows], self.language[rows])

    def save(self, path: Path, meta: dict) -> Path:
        from safetensors.torch import save_file

        tensors = {f"exit.{p}": h.contiguous() for p, h in self.exits.items()}
        tensors.update(final=self.final.contiguous(), target_ids=self.target_ids.contiguous(),
                       target_logprobs=self.target_logprobs.contiguous(), language=self.language.contiguous())
        metadata = {"format": STATES_FORMAT, "meta": json.dumps(meta)}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def load(cls, path: Path) -> tuple["CalibrationStates", dict]:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != STATES_FORMAT:
            raise GreencodeError(f"{path}: not a greencode calibration-states file")
        return assemble([path]), json.loads(metadata["meta"])


def progress_line(what: str, done: int, total: int, started: float, unit: str = "tokens") -> str:
    """'what: done/total unit, rate/s, ETA' for long steps."""
    elapsed = max(time.perf_counter() - started, 1e-9)
    rate = done / elapsed
    eta = (total - done) / rate if rate > 0 else float("inf")
    return f"{what}: {done}/{total} {unit}, {rate:.0f} {unit}/s, ETA {eta / 60:.1f} min"


def _alternate(chunks_by_language: dict[str, list]) -> list[tuple[str, list[int]]]:
    """(language, chunk) pairs taking one chunk of each language in turn."""
    queues = {lang: list(chunks) for lang, chunks in chunks_by_language.items()}
    out = []
    while any(queues.values()):
        for lang, queue in queues.items():
            if queue:
                out.append((lang, queue.pop(0)))
    return out


def collect_states(loaded, pairs: list[tuple[str, list[int]]], exit_points: list[int], log=print,
                   top_k: int = TARGET_TOP_K, progress: tuple[int, int, float] | None = None) -> CalibrationStates:
    """Run the frozen model over (language, window) pairs once (all layers, teacher-forced) and keep what
    calibration needs. `progress` = (tokens done before, tokens in all, start time) for the log line."""
    import torch

    adapter = loaded.adapter
    points = set(exit_points)
    done, total, started = progress or (0, sum(len(c) for _, c in pairs), time.perf_counter())
    exits: dict[int, list] = {p: [] for p in exit_points}
    finals, ids, logprobs, languages = [], [], [], []
    last_log = 0.0
    with torch.inference_mode():
        for language, chunk in pairs:
            tokens = torch.tensor([chunk])
            positions = torch.arange(len(chunk))[None]
            hidden = adapter.embed(tokens, positions)
            context = adapter.layer_context(hidden, positions)
            for index in range(adapter.num_layers):
                hidden = adapter.run_layer(index, hidden, context, None)
                if index + 1 in points:
                    exits[index + 1].append(hidden[0].to(torch.float16))
            top = torch.log_softmax(adapter.logits(hidden[0]).float(), dim=-1).topk(top_k, dim=-1)
            finals.append(hidden[0].to(torch.float16))
            ids.append(top.indices)
            logprobs.append(top.values)
            languages.append(torch.full((len(chunk),), LANGUAGES.index(language)))
            done += len(chunk)
            if time.perf_counter() - last_log > 30 or done == total:
                last_log = time.perf_counter()
                log(progress_line("caching hidden states", done, total, started))
    return CalibrationStates({p: torch.cat(v) for p, v in exits.items()}, torch.cat(finals), torch.cat(ids),
                             torch.cat(logprobs), torch.cat(languages))


def assemble(part_paths: list[Path]) -> CalibrationStates:
    """One CalibrationStates from part files, filled into tensors allocated once: a million tokens' states
    (~12 GB) never sit in memory twice, as concatenating loaded parts would make them."""
    import torch
    from safetensors import safe_open

    rows = []
    for part_path in part_paths:  # row counts from the headers, so the tensors are allocated at their full size
        with safe_open(str(part_path), framework="pt") as handle:
            rows.append(handle.get_slice("final").get_shape()[0])
    full: dict[str, torch.Tensor] = {}
    start = 0
    for part_path, count in zip(part_paths, rows):
        with safe_open(str(part_path), framework="pt") as handle:
            for key in handle.keys():
                piece = handle.get_tensor(key)
                if key not in full:
                    full[key] = torch.empty((sum(rows), *piece.shape[1:]), dtype=piece.dtype)
                full[key][start:start + count] = piece
        start += count
    exits = {int(k.split(".")[1]): v for k, v in full.items() if k.startswith("exit.")}
    return CalibrationStates(dict(sorted(exits.items())), full["final"], full["target_ids"], full["target_logprobs"],
                             full["language"])


def _matching(path: Path, meta: dict) -> bool:
    """Does `path` hold a readable part made for `meta`? (an unreadable one is simply made again)"""
    if not path.is_file():
        return False
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        saved = json.loads(metadata.get("meta", "{}"))
    except (SafetensorError, OSError, ValueError):
        return False
    return metadata.get("format") == STATES_FORMAT and {k: saved.get(k) for k in meta} == meta


def short_languages(chunks: dict[str, list], seq_len: int, tokens_per_language: int) -> dict[str, int]:
    """{language: tokens it has} for each language whose split holds fewer windows than the budget asks."""
    return {lang: len(c) * seq_len for lang, c in chunks.items() if len(c) * seq_len < tokens_per_language}


def cached_states(loaded, files_by_language: dict[str, list], exit_points: list[int], tokens_per_language: int,
                  seq_len: int, seed: int, path: Path, log=print) -> tuple[CalibrationStates, dict[str, int]]:
    """(states, languages short of the budget: {language: tokens}) for `files_by_language`.

    The cache is a set of part files beside `path` (PART_WINDOWS windows each), made for this model, exit
    points and size: a stopped run resumes from its parts, and a later build reuses them all."""
    meta = {"model": loaded.name, "exit_points": list(exit_points), "tokens_per_language": tokens_per_language,
            "seq_len": seq_len, "seed": seed}
    chunks = {lang: windows(files, loaded.tokenizer, seq_len, tokens_per_language, seed)
              for lang, files in files_by_language.items()}
    empty = [lang for lang, c in chunks.items() if not c]
    if empty:
        raise GreencodeError(f"calibration corpus too small: {', '.join(empty)} has no file of at least {seq_len} "
                             "tokens in its split; add longer files or point data.corpus at a larger corpus")
    short = short_languages(chunks, seq_len, tokens_per_language)
    log("windows: " + ", ".join(f"{lang} {len(c)} x {seq_len} tokens" for lang, c in chunks.items()))
    for lang, tokens in short.items():
        log(f"calibration corpus too small: {lang} has {tokens} tokens in {len(chunks[lang])} windows of its split, "
            f"below the {tokens_per_language} asked; calibrating on what there is")
    pairs = _alternate(chunks)  # languages alternate, so every part holds both
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [(path.with_name(f"{path.stem}.part{number:03d}.safetensors"), {**meta, "part": number},
              pairs[start:start + PART_WINDOWS]) for number, start in enumerate(range(0, len(pairs), PART_WINDOWS))]
    missing = [(part_path, part_meta, batch) for part_path, part_meta, batch in parts
               if not _matching(part_path, part_meta)]
    if len(missing) < len(parts):
        log(f"reusing {len(parts) - len(missing)} of {len(parts)} cached state parts beside {path}")
    total, started, done = sum(len(c) for *_, batch in missing for _, c in batch), time.perf_counter(), 0
    for part_path, part_meta, batch in missing:  # the log's rate and ETA count only what runs now
        collect_states(loaded, batch, exit_points, log, progress=(done, total, started)).save(part_path, part_meta)
        done += sum(len(c) for _, c in batch)
    part_paths = [part_path for part_path, *_ in parts]
    return assemble(part_paths), short


# ---- the shortlist: the most frequent tokens of the train split ---------------------------------------

def token_counts(files: list, tokenizer, max_tokens: int, seed: int = 0, log=print, what: str = "") -> "torch.Tensor":
    """(vocab,) counts of token ids over `files` (shuffled by seed), stopping after max_tokens (0 = all)."""
    import torch

    order = list(files)
    random.Random(seed).shuffle(order)
    counts = torch.zeros(len(tokenizer), dtype=torch.int64)
    started, done, last_log = time.perf_counter(), 0, time.perf_counter()
    for start in range(0, len(order), 64):
        batch = tokenizer([f.text for f in order[start:start + 64]], add_special_tokens=False)["input_ids"]
        for ids in batch:
            counts += torch.bincount(torch.tensor(ids, dtype=torch.int64), minlength=len(tokenizer))
            done += len(ids)
        if time.perf_counter() - last_log > 30:
            last_log = time.perf_counter()
            log(progress_line(f"counting {what} tokens", done, max_tokens or done, started))
        if max_tokens and done >= max_tokens:
            break
    return counts


def shortlist_ids(counts_by_language: dict[str, "torch.Tensor"], k: int) -> "torch.Tensor":
    """The k ids with the highest mean relative frequency across languages (each language weighs the same)."""
    import torch

    from greencode.exits.shortlist import most_frequent

    share = sum(c.double() / max(int(c.sum()), 1) for c in counts_by_language.values())
    return most_frequent(share / len(counts_by_language), k)


def coverage(ids: "torch.Tensor", counts: "torch.Tensor") -> float:
    """The share of the counted tokens whose id is in the shortlist."""
    return round(float(counts[ids].sum()) / max(int(counts.sum()), 1), 4)
