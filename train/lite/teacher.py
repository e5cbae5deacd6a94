"""The frozen teacher of self-distilling LITE: its final-layer logits, live or from a cache on disk.

The teacher is the model being fine-tuned as it starts ([finetune].teacher = "", a frozen copy), or
another model that shares its tokenizer. It runs under no_grad on each batch; or, for a fixed corpus,
its final states (after the final norm, what its head reads) are computed once and cached in
[finetune].teacher_cache, and each batch's logits are the frozen head applied to them (the head is
8 layer-units on SmolLM2; the whole teacher is 38).

Cache format (`greencode-teacher-cache/1`): DIR/manifest.json (teacher, chunk count, seq_len, hidden
size, a fingerprint of the chunks' token ids) and DIR/states-NNNNN.safetensors, one tensor "states"
(n, T, d) float16 per shard of SHARD_CHUNKS chunks. It is built in DIR.partial-PID and renamed into
place when complete, so an interrupted build (Ctrl-C) leaves nothing behind.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from greencode.files.atomic import atomic_write_text
from greencode.errors import GreencodeError

CACHE_FORMAT = "greencode-teacher-cache/1"
SHARD_CHUNKS = 64
MANIFEST = "manifest.json"


class Teacher:
    """A frozen causal LM whose final layer the exits learn; `logits(ids)` or `logits_from_states(s)`."""

    def __init__(self, model, name: str):
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.cache: TeacherCache | None = None

    def _follow(self, device) -> None:
        if next(self.model.parameters()).device != device:
            self.model.to(device)

    @torch.no_grad()
    def states(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, d): the final layer's output after the final norm."""
        self._follow(ids.device)
        return self.model(input_ids=ids, output_hidden_states=True).hidden_states[-1]

    @torch.no_grad()
    def logits_from_states(self, states: torch.Tensor) -> torch.Tensor:
        self._follow(states.device)
        head = self.model.get_output_embeddings()
        return head(states.to(head.weight.dtype))  # (B, T, V)

    @torch.no_grad()
    def logits(self, ids: torch.Tensor, chunks: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) -> (B, T, V); from the cache when there is one and the batch says which chunks it holds."""
        if self.cache is not None and chunks is not None:
            return self.logits_from_states(self.cache.states(chunks).to(ids.device))
        self._follow(ids.device)
        return self.model(input_ids=ids).logits


def _same_vocabulary(student_tokenizer, teacher_tokenizer) -> bool:
    return student_tokenizer.get_vocab() == teacher_tokenizer.get_vocab()


def load_teacher(config, loaded) -> Teacher:
    """The teacher [finetune].teacher names, checked against the student `loaded` (before any LoRA wrap)."""
    from greencode.model.load import load_model

    spec = config.finetune.teacher
    if not spec:
        return Teacher(copy.deepcopy(loaded.model), f"{loaded.spec} (frozen at the start)")
    other = load_model(spec, "float32", "cpu", config.model.cache_dir)
    student_vocab = loaded.model.get_output_embeddings().weight.shape[0]
    teacher_vocab = other.model.get_output_embeddings().weight.shape[0]
    if student_vocab != teacher_vocab or not _same_vocabulary(loaded.tokenizer, other.tokenizer):
        raise GreencodeError(
            f"finetune.teacher: {spec} has another tokenizer or vocabulary ({teacher_vocab} logits, "
            f"{len(other.tokenizer)} tokens) than {loaded.spec} ({student_vocab} logits, {len(loaded.tokenizer)} "
            "tokens); the teacher must be the student's base model (or \"\" for the student as it starts)")
    return Teacher(other.model, spec)


def fingerprint(chunks: torch.Tensor) -> str:
    return hashlib.sha256(chunks.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


class TeacherCache:
    """Read side of a built cache: states of chunk indices, one shard file open at a time per shard."""

    def __init__(self, directory: Path, manifest: dict):
        self.directory = directory
        self.manifest = manifest
        self._handles: dict[int, object] = {}

    def _shard(self, number: int):
        from safetensors import safe_open

        if number not in self._handles:
            self._handles[number] = safe_open(str(self.directory / f"states-{number:05d}.safetensors"),
                                              framework="pt")
        return self._handles[number]

    def states(self, chunks: torch.Tensor) -> torch.Tensor:
        rows = []
        for index in chunks.tolist():
            number, offset = divmod(int(index), SHARD_CHUNKS)
            rows.append(self._shard(number).get_slice("states")[offset:offset + 1])
        return torch.cat(rows).float()  # (B, T, d)


def _expected(teacher: Teacher, chunks: torch.Tensor) -> dict:
    return {"format": CACHE_FORMAT, "teacher": teacher.name, "chunks": int(chunks.shape[0]),
            "seq_len": int(chunks.shape[1]), "fingerprint": fingerprint(chunks)}


def open_or_build_cache(directory: str | Path, teacher: Teacher, chunks: torch.Tensor, echo=print,
                        batch_size: int = 4) -> TeacherCache:
    """The cache in `directory` for exactly these chunks (N, T): reused when it matches, else built."""
    from safetensors.torch import save_file

    directory = Path(directory).expanduser()
    expected = _expected(teacher, chunks)
    if directory.exists():
        manifest_path = directory / MANIFEST
        try:
            found = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            raise GreencodeError(f"finetune.teacher_cache: {directory} exists but is not a teacher cache "
                                 "(no readable manifest.json); delete it or choose another directory") from None
        differs = [key for key in expected if found.get(key) != expected[key]]
        if differs:
            raise GreencodeError(f"finetune.teacher_cache: {directory} was built for another run "
                                 f"({', '.join(differs)} differ); delete it or choose another directory")
        echo(f"teacher cache: reusing {directory} ({expected['chunks']} chunks)")
        return TeacherCache(directory, found)

    hidden = teacher.model.get_output_embeddings().weight.shape[1]
    size_gb = chunks.numel() * hidden * 2 / 1e9
    directory.parent.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(directory.parent).free / 1e9
    if size_gb > 0.9 * free_gb:
        raise GreencodeError(f"finetune.teacher_cache: {directory} would need {size_gb:.1f} GB, "
                             f"{free_gb:.1f} GB are free; set --max-steps, use another disk or teacher_cache = \"\"")
    partial = directory.with_name(f"{directory.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    echo(f"teacher cache: computing the teacher's final states for {expected['chunks']} chunks "
         f"({size_gb:.2f} GB) into {directory}")
    try:
        for number, start in enumerate(range(0, len(chunks), SHARD_CHUNKS)):
            shard = chunks[start:start + SHARD_CHUNKS]
            states = torch.cat([teacher.states(shard[i:i + batch_size]) for i in range(0, len(shard), batch_size)])
            save_file({"states": states.to(torch.float16).contiguous()},
                      str(partial / f"states-{number:05d}.safetensors"))
            echo(f"teacher cache: {min(start + SHARD_CHUNKS, len(chunks))}/{len(chunks)} chunks")
        atomic_write_text(partial / MANIFEST, json.dumps({**expected, "hidden_size": hidden}, indent=2) + "\n")
        os.replace(partial, directory)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # only left when interrupted or failed
    return TeacherCache(directory, {**expected, "hidden_size": hidden})


def attach_cache(teacher: Teacher, train, directory: str, chunks_per_step: int, max_steps: int, seed: int, echo):
    """Keep the chunks a run reads (a seeded choice when max_steps bounds it), number them (column
    "chunk", which the collator passes on), and give the teacher their cached final states."""
    if max_steps > 0 and max_steps * chunks_per_step < len(train):
        train = train.shuffle(seed=seed).select(range(max_steps * chunks_per_step))
    train = train.add_column("chunk", list(range(len(train))))
    chunks = torch.tensor(train["input_ids"], dtype=torch.long)
    teacher.cache = open_or_build_cache(directory, teacher, chunks, echo=echo)
    return train
