"""Evaluation samples for `greencode eval`, by one of two protocols.

- `file` (paper VI-C): from each test-split file, the first `context_fraction` of its tokens (at most
  `max_context_tokens`, the ones nearest the cut) is the context and the next `max_new_tokens` tokens the
  ground truth. Files are drawn in a fixed hash order (greencode.eval.cut), so N samples are always the
  same N, and asking for more extends the list.
- `line` (CodeXGLUE line-level completion, a `{"input", "gt"}` jsonl): the input is the context, the
  ground truth is the rest of the line, and the completion stops at the end of the line. The jsonl is a
  test set already, so the first N records are taken, in file order. Both sides go back from
  CodeXGLUE's token format to code (greencode.data.codexglue_to_text).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from greencode.errors import GreencodeError

SAMPLE_SEED = 0  # the draw is deterministic; a fixed seed keeps it the same across runs and machines


@dataclass(frozen=True)
class EvalSample:
    key: str  # stable id: resumed runs match completed work by it
    language: str
    context_ids: list[int]
    context: str  # decoded context (for syntax validity in place)
    reference: str  # ground truth text


@dataclass
class SampleSet:
    protocol: str  # "file" | "line"
    samples: list[EvalSample]
    source: str
    notes: list[str]


def is_line_corpus(corpus: str) -> bool:
    return corpus.strip().endswith(".jsonl")


def read_corpus(config, calibration: dict | None = None):
    """The files to draw from (file protocol: the test split, or with [eval].split = all every file that
    `calibration` (greencode.eval.holdout) did not read) or the jsonl records (line protocol): read before any
    model is loaded, so a missing or empty corpus fails at once."""
    from greencode.data import CodeFiles, load_line_completion_jsonl, load_split
    from greencode.eval.holdout import unseen_files

    if is_line_corpus(config.data.corpus):
        path = Path(config.data.corpus.strip()).expanduser()
        if not path.exists():
            raise GreencodeError(f"data.corpus: {path} does not exist (a CodeXGLUE line-completion .jsonl)")
        return load_line_completion_jsonl(path)
    if config.eval.split == "test":
        files = CodeFiles(load_split(config.data, "test"))
        files.selection = "test split"
        return files
    files, excluded = unseen_files(config.data, calibration)
    files.selection = (f"all files not used for calibration ({excluded} calibration files left out)" if excluded
                       else "all files")
    return files


def file_samples(files, data_config, tokenizer, count: int, fraction: float, max_context: int,
                 max_new_tokens: int) -> SampleSet:
    from greencode.eval.cut import make_samples

    drawn = make_samples(files, tokenizer, count, fraction, max_context, max_new_tokens, seed=SAMPLE_SEED)
    samples = [EvalSample(key=s.path, language=s.language, context_ids=list(s.context_ids),
                          context=tokenizer.decode(s.context_ids), reference=tokenizer.decode(s.target_ids))
               for s in drawn]
    notes = []
    if len(samples) < count:
        notes.append(f"asked for {count} samples, the {getattr(files, 'selection', '') or 'test split'} of "
                     f"{data_config.corpus} give {len(samples)} "
                     f"(files long enough for {max_new_tokens} ground-truth tokens after a "
                     f"{fraction:.0%} context): using {len(samples)}")
    source = getattr(files, "source", "") or data_config.corpus
    selection = getattr(files, "selection", "") or "test split"
    if selection != "test split":
        notes.append(f"{data_config.corpus}: {selection}")
    return SampleSet("file", samples, f"{source}, {selection}: {len(files)} files", notes)


def _jsonl_language(path: Path, configured: str) -> str:
    if configured != "auto":
        return configured
    return "java" if "java" in path.name.lower() else "python"


def line_samples(records: list[tuple[str, str]], data_config, tokenizer, count: int, max_context: int) -> SampleSet:
    from greencode.data import codexglue_to_text

    path = Path(data_config.corpus.strip()).expanduser()
    language = _jsonl_language(path, data_config.language)
    samples, empty = [], 0
    for number, (given, truth) in enumerate(records, 1):
        if len(samples) >= count:
            break
        context = codexglue_to_text(given).rstrip("\n")  # the input stops mid-line: no newline after it
        reference = codexglue_to_text(truth).strip()
        ids = tokenizer(context, add_special_tokens=False)["input_ids"][-max_context:]
        if not ids or not reference:
            empty += 1
            continue
        samples.append(EvalSample(f"line {number}", language, ids, tokenizer.decode(ids), reference))
    notes = []
    if empty:
        notes.append(f"{empty} records with an empty input or ground truth were passed over")
    if len(samples) < count:
        notes.append(f"asked for {count} samples, {path.name} gives {len(samples)}: using {len(samples)}")
    return SampleSet("line", samples, f"CodeXGLUE line completion {path} ({language})", notes)


def load_samples(config, tokenizer, corpus) -> SampleSet:
    """The samples `config` asks for from `corpus` (read_corpus's); none at all is an error."""
    ev = config.eval
    if is_line_corpus(config.data.corpus):
        chosen = line_samples(corpus, config.data, tokenizer, ev.samples, ev.max_context_tokens)
    else:
        chosen = file_samples(corpus, config.data, tokenizer, ev.samples, ev.context_fraction,
                              ev.max_context_tokens, ev.max_new_tokens)
    if not chosen.samples:
        raise GreencodeError(f"data.corpus: {config.data.corpus} gives no evaluation samples "
                             f"({'; '.join(chosen.notes) or 'no file is long enough'}); use a larger corpus")
    return chosen
