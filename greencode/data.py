"""Code corpora for training and evaluation, with deterministic train/validation/test splits.

Sources ([data].corpus): `stdlib` (the running interpreter's standard library, the embedded default),
a directory, a glob, a `.zip` (e.g. a JDK's lib/src.zip), a CodeXGLUE line-completion `.jsonl`
({"input", "gt"}), or `hf:NAME[:CONFIG]` through `datasets` (CodeXGLUE token-level `py150` and
`javacorpus` by name) when the hub or a local copy is reachable.

Files come back sorted by path; a file is in train, validation or test by a salted hash of its path,
so the split is stable when the corpus grows. `to_dataset` + `pack` turn files into fixed-length token
chunks through `datasets`, so mapping and caching behave as HF users expect.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import sysconfig
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from greencode.errors import GreencodeError

EXTENSIONS = {"python": (".py",), "java": (".java",)}
SPLITS = ("train", "validation", "test")
# CodeXGLUE token-level datasets by short name: (hub id, config)
HF_ALIASES = {
    "py150": ("code_x_glue_cc_code_completion_token", "python"),
    "javacorpus": ("code_x_glue_cc_code_completion_token", "java"),
}


@dataclass(frozen=True)
class CodeFile:
    path: str  # stable id inside the corpus (relative path, zip member, jsonl line, hub row)
    text: str
    language: str  # "python" | "java" | "text"


class CodeFiles(list):
    """A list of CodeFile that also says what was left out while reading."""

    def __init__(self, files: Iterable[CodeFile] = (), source: str = "", skipped: list[str] | None = None):
        super().__init__(files)
        self.source = source
        self.selection = ""  # which of the corpus's files these are, e.g. "test split" (for reports)
        self.skipped = list(skipped or [])  # paths that were not UTF-8 text (binary or another encoding)

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)


@dataclass
class _Reader:
    """Collects decoded files and the ones that were not text."""

    files: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def add(self, path: str, raw: bytes, language: str) -> None:
        if b"\x00" in raw:
            self.skipped.append(path)
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.skipped.append(path)
            return
        if text.strip():  # empty files (many __init__.py) teach nothing
            self.files.append(CodeFile(path=path, text=text.lstrip("\ufeff"), language=language))


def _hash_unit(salt: str, path: str) -> float:
    """A number in [0, 1) fixed by (salt, path)."""
    digest = hashlib.sha256(f"{salt}\x00{path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _languages(config) -> dict[str, str]:
    """Extension -> language for the configured language (auto = every known one)."""
    chosen = EXTENSIONS if config.language == "auto" else {config.language: EXTENSIONS[config.language]}
    return {ext: lang for lang, exts in chosen.items() for ext in exts}


def _language_of(name: str, by_ext: dict[str, str]) -> str | None:
    return next((lang for ext, lang in by_ext.items() if name.endswith(ext)), None)


def _cap(names: list[str], config) -> list[str]:
    """At most max_files names: those with the smallest hash (a fair sample, not the first letters)."""
    if config.max_files and len(names) > config.max_files:
        names = sorted(names, key=lambda n: _hash_unit(f"{config.split_seed}:select", n))[:config.max_files]
    return sorted(names)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _read_tree(root: Path, paths: list[Path], config, source: str) -> CodeFiles:
    by_ext = _languages(config)
    named = {p.relative_to(root).as_posix() if root else p.as_posix(): p for p in paths}
    reader = _Reader()
    for name in _cap([n for n in named if _language_of(n, by_ext)], config):
        try:
            raw = named[name].read_bytes()
        except OSError:
            reader.skipped.append(name)
            continue
        reader.add(name, raw, _language_of(name, by_ext))
    return CodeFiles(reader.files, source, reader.skipped)


def _vendored(relative: Path) -> bool:
    """Hidden folders (.git, .venv) and installed packages are not the project's own code."""
    return any(part.startswith(".") or part in ("site-packages", "node_modules") for part in relative.parts[:-1])


def _read_stdlib(config) -> CodeFiles:
    root = stdlib_root()
    # Installed third-party packages are not the standard library; test suites are real code and stay.
    paths = [p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts]
    return _read_tree(root, [p for p in paths if p.is_file()], _python_only(config), f"stdlib ({root})")


def _python_only(config):
    import dataclasses

    return dataclasses.replace(config, language="python") if config.language == "auto" else config


def _read_zip(path: Path, config) -> CodeFiles:
    by_ext = _languages(config)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise GreencodeError(f"{path}: not a readable zip file ({exc})") from None
    with archive:
        members = {i.filename: i for i in archive.infolist() if not i.is_dir()}
        reader = _Reader()
        for name in _cap([n for n in members if _language_of(n, by_ext)], config):
            reader.add(name, archive.read(members[name]), _language_of(name, by_ext))
    return CodeFiles(reader.files, f"zip {path}", reader.skipped)


_LITERAL = re.compile(r"<(STR|NUM|CHAR)_LIT(?::(.*?))?>")


def codexglue_to_text(tokens: str) -> str:
    """CodeXGLUE's space-separated tokens back to readable code: <EOL> -> newline, literals restored."""

    def literal(match: re.Match) -> str:
        kind, value = match.group(1), match.group(2)
        if kind == "NUM":
            return value if value is not None else "0"
        quote = "'" if kind == "CHAR" else '"'
        return f"{quote}{value or ''}{quote}"

    text = tokens.replace("<s>", "").replace("</s>", "")
    text = _LITERAL.sub(literal, text)
    lines = [line.strip() for line in text.split("<EOL>")]
    return "\n".join(lines).strip("\n") + "\n"


def load_line_completion_jsonl(path: str | Path) -> list[tuple[str, str]]:
    """CodeXGLUE line-completion samples: (input, gt) pairs exactly as in the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GreencodeError(f"{path}: line-completion file not found")
    samples = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
                samples.append((str(row["input"]), str(row["gt"])))
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
                raise GreencodeError(
                    f"{path}:{number}: not a line-completion record with \"input\" and \"gt\" ({type(exc).__name__})"
                ) from None
    if not samples:
        raise GreencodeError(f"{path}: no line-completion samples in the file")
    return samples


def _read_jsonl(path: Path, config) -> CodeFiles:
    language = config.language if config.language != "auto" else ("java" if "java" in path.name.lower() else "python")
    files = [CodeFile(path=f"{path.name}:{i}", text=codexglue_to_text(inp + " " + gt), language=language)
             for i, (inp, gt) in enumerate(load_line_completion_jsonl(path), 1)]
    keep = set(_cap([f.path for f in files], config))
    return CodeFiles(sorted((f for f in files if f.path in keep), key=lambda f: f.path), f"jsonl {path}")


def _hf_rows(name: str, subset: str | None):
    """Rows of a hub dataset (or a local copy): a local dir first, then the cache, then the hub."""
    import datasets

    local = Path(name).expanduser()
    try:
        if local.is_dir() and ((local / "state.json").exists() or (local / "dataset_dict.json").exists()):
            loaded = datasets.load_from_disk(str(local))
        elif local.exists():
            loaded = datasets.load_dataset(str(local), subset)
        else:
            from greencode.hub import hub_reachable

            if not hub_reachable():
                raise GreencodeError(
                    f"hf:{name}: the Hugging Face hub is not reachable; pass a local copy (hf:DIR saved with "
                    "save_to_disk) or another [data].corpus"
                )
            loaded = datasets.load_dataset(name, subset)
    except GreencodeError:
        raise
    except Exception as exc:  # datasets raises many types for "not found / not readable"
        raise GreencodeError(f"hf:{name}: cannot load the dataset ({type(exc).__name__}: {exc})"[:300]) from None
    if isinstance(loaded, datasets.DatasetDict):
        for split in loaded:
            yield from ((f"{split}/{i}", row) for i, row in enumerate(loaded[split]))
    else:
        yield from ((str(i), row) for i, row in enumerate(loaded))


def _read_hf(spec: str, config) -> CodeFiles:
    name, _, subset = spec.partition(":")
    name, subset = HF_ALIASES.get(name.lower(), (name, subset or None))
    language = config.language if config.language != "auto" else ("java" if subset == "java" else "python")
    files = []
    for index, row in _hf_rows(name, subset):
        code = next((row[k] for k in ("code", "content", "text") if k in row), None)
        if code is None:
            raise GreencodeError(f"hf:{spec}: rows have no code/content/text column (columns: {', '.join(row)})")
        text = codexglue_to_text(" ".join(code)) if isinstance(code, list) else str(code)
        files.append(CodeFile(path=str(row.get("path") or index), text=text, language=language))
    keep = set(_cap([f.path for f in files], config))
    return CodeFiles(sorted((f for f in files if f.path in keep), key=lambda f: f.path), f"hf:{spec}")


def _read_glob(pattern: str, config) -> CodeFiles:
    """Every file the pattern matches; with language=auto, unknown extensions come in as "text"."""
    by_ext = _languages(config)
    names = [p for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
    if config.language != "auto":
        names = [n for n in names if _language_of(n, by_ext)]
    reader = _Reader()
    for name in _cap([Path(n).as_posix() for n in names], config):
        reader.add(name, Path(name).read_bytes(), _language_of(name, by_ext) or "text")
    return CodeFiles(reader.files, f"glob {pattern}", reader.skipped)


def load_files(config) -> CodeFiles:
    """Every usable file of [data].corpus, sorted by path; non-UTF-8 files are skipped and counted."""
    corpus = config.corpus.strip()
    if not corpus:
        raise GreencodeError("data.corpus is empty; use stdlib, a directory, a glob, a .zip, a .jsonl or hf:NAME")
    if corpus == "stdlib":
        files = _read_stdlib(config)
    elif corpus.startswith("hf:"):
        files = _read_hf(corpus[3:], config)
    elif any(ch in corpus for ch in "*?["):
        files = _read_glob(corpus, config)
    else:
        path = Path(corpus).expanduser()
        if not path.exists():
            raise GreencodeError(f"data.corpus: {corpus} does not exist (a directory, glob, .zip, .jsonl, "
                                 "stdlib or hf:NAME)")
        if path.is_dir():
            files = _read_tree(path, [p for p in path.rglob("*") if p.is_file() and not _vendored(p.relative_to(path))],
                               config, f"directory {path}")
        elif path.suffix == ".zip":
            files = _read_zip(path, config)
        elif path.suffix == ".jsonl":
            files = _read_jsonl(path, config)
        else:
            files = _read_glob(str(path), config)
    if not files:
        kinds = "/".join(_languages(config)) if not corpus.startswith("hf:") else "rows"
        skipped = f" ({files.skipped_count} skipped as not UTF-8)" if files.skipped_count else ""
        raise GreencodeError(f"data.corpus: {corpus} has no usable {kinds} files{skipped}")
    return files


def split_of(path: str, config) -> str:
    """'train' | 'validation' | 'test' for a path, fixed by the salted hash."""
    unit = _hash_unit(config.split_seed, path)
    if unit < config.test_fraction:
        return "test"
    if unit < config.test_fraction + config.validation_fraction:
        return "validation"
    return "train"


def split_files(files: list[CodeFile], config) -> tuple[list[CodeFile], list[CodeFile], list[CodeFile]]:
    """(train, validation, test), each in the input order."""
    parts: dict[str, list[CodeFile]] = {name: [] for name in SPLITS}
    for file in files:
        parts[split_of(file.path, config)].append(file)
    return parts["train"], parts["validation"], parts["test"]


def load_split(config, split: str) -> list[CodeFile]:
    """The files of one split ("train", "validation" or "test"); an empty split is an error."""
    if split not in SPLITS:
        raise GreencodeError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    chosen = split_files(load_files(config), config)[SPLITS.index(split)]
    if not chosen:
        raise GreencodeError(f"data.corpus: {config.corpus} has no files in the {split} split; "
                             f"raise data.{split}_fraction or use a larger corpus")
    return chosen


# ---- datasets: files -> tokens -> fixed-length chunks ----------------------------------------

def _generate(rows: list[dict]) -> Iterator[dict]:
    yield from rows


def to_dataset(files: list[CodeFile]):
    """A `datasets.Dataset` with columns path, text, language (built through from_generator, so cached)."""
    import datasets

    rows = [{"path": f.path, "text": f.text, "language": f.language} for f in files]
    features = datasets.Features({k: datasets.Value("string") for k in ("path", "text", "language")})
    return datasets.Dataset.from_generator(_generate, gen_kwargs={"rows": rows}, features=features)


def pack(dataset, tokenizer, seq_len: int, num_proc: int | None = None):
    """Tokenise every file (an end-of-text token after each) and cut the stream into seq_len chunks.

    Returns a Dataset with one column, input_ids, every row exactly seq_len long; the tail of each
    batch of 1000 files that does not fill a chunk is dropped.
    """
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def tokenize(batch):
        encoded = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [ids + separator for ids in encoded]}

    def chunk(batch):
        stream = [t for ids in batch["input_ids"] for t in ids]
        usable = len(stream) // seq_len * seq_len
        return {"input_ids": [stream[i:i + seq_len] for i in range(0, usable, seq_len)]}

    tokens = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, num_proc=num_proc,
                         desc="tokenising")
    return tokens.map(chunk, batched=True, batch_size=1000, num_proc=num_proc, desc=f"packing into {seq_len}")
