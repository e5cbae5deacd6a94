"""Completion quality metrics, offline and reproducible (docs/architecture.md "Metrics", paper VI-A2).

Per sample: exact match (CodeXGLUE: the same whitespace-split tokens), edit similarity (CodeXGLUE:
round(rapidfuzz.fuzz.ratio), 0..100) and syntax validity (tree-sitter). Per corpus: ROUGE-L (mean F1
over samples, on code tokens: rouge-score's default tokenizer lowercases and drops `==`/`!=`), BLEU
(sacrebleu on code tokens joined by spaces, tokenize="none", scaled to 0..1) and CodeBLEU with its four
sub-scores (codebleu 0.7.0 on tree-sitter 0.25; code tokens for its n-gram parts).

CodeBLEU's dataflow score depends on string hashing (codebleu normalises variable names through
`list(set(...))`), so it is only reproducible with a fixed PYTHONHASHSEED (CodeXGLUE issue 152).
`codebleu()` therefore always scores as an interpreter started with PYTHONHASHSEED=0 would: here when
this one was, else in a child interpreter started so (one short process per call).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache

# Multi-character operators first, so `==`, `!=`, `->`, `**=` stay whole tokens.
_OPERATORS = (r">>>=|<<=|>>=|\*\*=|//=|>>>|\.\.\.|->|==|!=|<=|>=|\+=|-=|\*=|/=|%=|&=|\|=|\^=|@=|:="
              r"|\*\*|//|<<|>>|&&|\|\||\+\+|--|::")
_CODE_TOKEN = re.compile(rf"[^\W\d]\w*|\d[\w.]*|{_OPERATORS}|\S")

CODEBLEU_WEIGHTS = (0.25, 0.25, 0.25, 0.25)  # ngram, weighted ngram, syntax, dataflow (CodeBLEU paper)
REPRODUCIBLE_HASH_SEED = "0"  # CodeBLEU scores are those an interpreter started with PYTHONHASHSEED=0 gives
CODEBLEU_LANGUAGES = ("java", "javascript", "c_sharp", "php", "c", "cpp", "python", "go", "ruby", "rust")


def code_tokens(text: str) -> list[str]:
    """Identifiers, numbers, operators (multi-character ones whole) and single punctuation; case kept."""
    return _CODE_TOKEN.findall(text)


class _CodeTokenizer:
    """rouge-score's tokenizer protocol (an object with .tokenize)."""

    def tokenize(self, text: str) -> list[str]:
        return code_tokens(text)


# --- per sample -------------------------------------------------------------------------------------

def exact_match(prediction: str, reference: str) -> bool:
    """CodeXGLUE line completion: the same tokens once whitespace is ignored."""
    return prediction.split() == reference.split()


def edit_similarity(prediction: str, reference: str) -> int:
    """CodeXGLUE's edit similarity, 0..100 (fuzzywuzzy's fuzz.ratio, here from rapidfuzz)."""
    from rapidfuzz import fuzz

    return round(fuzz.ratio(prediction.strip(), reference.strip()))


@lru_cache(maxsize=None)
def tree_sitter_language(language: str):
    """The tree-sitter Language for `language` (the `tree_sitter_<language>` package), or None."""
    from tree_sitter import Language

    try:
        grammar = importlib.import_module(f"tree_sitter_{language}")
    except ImportError:
        return None
    return Language(grammar.language())


def has_grammar(language: str) -> bool:
    return tree_sitter_language(language) is not None


@lru_cache(maxsize=None)
def _parser(language: str):
    from tree_sitter import Parser

    return Parser(tree_sitter_language(language))


def syntax_error_count(code: str, language: str) -> int:
    """tree-sitter ERROR nodes, plus MISSING nodes before the end of `code`.

    A MISSING node at the very end is only an unclosed construct (the fragment stops mid-block), not
    a mistake, so it doesn't count.
    """
    data = code.encode("utf-8")
    end = len(code.rstrip().encode("utf-8"))
    root = _parser(language).parse(data).root_node
    count, stack = 0, [root]
    while stack:
        node = stack.pop()
        if node.is_error or (node.is_missing and node.start_byte < end):
            count += 1
        stack.extend(child for child in node.children if child.has_error or child.is_missing)
    return count


def syntax_valid(prediction: str, reference: str, language: str, context: str = "") -> bool | None:
    """Does the prediction, after its context, parse with no more errors than the ground truth does?

    A 15-token completion is a fragment cut mid-file, so it is judged against the real continuation
    in the same place rather than as a stand-alone program. None when there is no grammar.
    """
    if not has_grammar(language):
        return None
    return syntax_error_count(context + prediction, language) <= syntax_error_count(context + reference, language)


# --- per corpus -------------------------------------------------------------------------------------

def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 over samples, on code tokens (case and operators kept)."""
    from rouge_score.rouge_scorer import RougeScorer

    if not predictions:
        return 0.0
    scorer = RougeScorer(["rougeL"], tokenizer=_CodeTokenizer())
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return sum(scores) / len(scores)


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacrebleu, tokenize="none") on space-joined code tokens, 0..1."""
    import sacrebleu

    if not predictions:
        return 0.0
    hyps = [" ".join(code_tokens(p)) for p in predictions]
    refs = [" ".join(code_tokens(r)) for r in references]
    return sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score / 100.0


@dataclass
class CodeBleu:
    codebleu: float | None
    ngram_match: float | None
    weighted_ngram_match: float | None
    syntax_match: float | None
    dataflow_match: float | None
    notes: list[str] = field(default_factory=list)


class _Captured(logging.Filter):
    """Swallows codebleu's root-logger warnings and keeps them as notes."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(record.getMessage())
        return False


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    captured, placeholder = _Captured(), logging.NullHandler()
    root.addFilter(captured)
    root.addHandler(placeholder)  # stops logging.warning() from calling basicConfig() behind our back
    try:
        yield captured
    finally:
        root.removeFilter(captured)
        root.removeHandler(placeholder)


def codebleu(predictions: list[str], references: list[str], language: str) -> CodeBleu:
    """CodeBLEU and its sub-scores, as computed with PYTHONHASHSEED=0 whatever this interpreter's seed.

    Without a grammar (or codebleu keywords) for `language`, only the n-gram match is computed and the
    notes say what was skipped. The total is the original CodeXGLUE weighted sum: codebleu 0.7 instead
    counts a dataflow score of 0 as 1 (`dataflow or 1`), which hands 0.25 to a corpus whose data-flows
    all mismatch; we don't.
    """
    from codebleu import bleu as ngram_bleu

    if not predictions:
        return CodeBleu(None, None, None, None, None, ["no samples"])
    if language not in CODEBLEU_LANGUAGES or not has_grammar(language):
        tokenized_refs = [[code_tokens(r.strip())] for r in references]
        ngram = ngram_bleu.corpus_bleu(tokenized_refs, [code_tokens(p.strip()) for p in predictions])
        return CodeBleu(None, ngram, None, None, None,
                        [f"no tree-sitter grammar or CodeBLEU keywords for '{language}': "
                         "syntax, dataflow and CodeBLEU skipped (n-gram match only)"])
    if os.environ.get("PYTHONHASHSEED") != REPRODUCIBLE_HASH_SEED:
        return _codebleu_in_child(predictions, references, language)
    return _codebleu_here(predictions, references, language)


def _codebleu_here(predictions: list[str], references: list[str], language: str) -> CodeBleu:
    from codebleu import calc_codebleu

    with _quiet_root_logger() as captured:
        scores = calc_codebleu(references, predictions, language, weights=CODEBLEU_WEIGHTS, tokenizer=code_tokens)
    parts = (scores["ngram_match_score"], scores["weighted_ngram_match_score"], scores["syntax_match_score"],
             scores["dataflow_match_score"])
    total = sum(w * s for w, s in zip(CODEBLEU_WEIGHTS, parts))
    notes = []
    if any("data-flow" in m for m in captured.messages):
        notes.append(f"{language}: no reference data-flows in this corpus; dataflow match is 0 by definition")
    return CodeBleu(total, *parts, notes=notes)


def _codebleu_in_child(predictions: list[str], references: list[str], language: str) -> CodeBleu:
    """Score in a child interpreter started with the fixed hash seed (string hashing is seeded at
    start-up, so this one's cannot be changed)."""
    env = dict(os.environ, PYTHONHASHSEED=REPRODUCIBLE_HASH_SEED)
    request = json.dumps({"predictions": predictions, "references": references, "language": language})
    done = subprocess.run([sys.executable, "-m", "greencode.eval.metrics"], input=request, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"CodeBLEU child process failed: {done.stderr.strip()[-2000:]}")
    return CodeBleu(**json.loads(done.stdout))


@dataclass
class Sample:
    """One scored completion: what the metrics need."""
    prediction: str
    reference: str
    language: str
    context: str = ""


def corpus_scores(samples: list[Sample]) -> dict:
    """Every quality metric over `samples`. CodeBLEU is computed per language and averaged weighted by
    sample count when the corpus mixes languages; `notes` says what was skipped and why."""
    if not samples:
        return {"samples": 0, "notes": ["no samples"]}
    preds = [s.prediction for s in samples]
    refs = [s.reference for s in samples]
    validity = [syntax_valid(s.prediction, s.reference, s.language, s.context) for s in samples]
    judged = [v for v in validity if v is not None]
    result: dict = {
        "samples": len(samples),
        "exact_match": sum(exact_match(p, r) for p, r in zip(preds, refs)) / len(samples),
        "edit_sim": sum(edit_similarity(p, r) for p, r in zip(preds, refs)) / len(samples),
        "rougeL": rouge_l(preds, refs),
        "bleu": bleu(preds, refs),
        "syntax_valid": sum(judged) / len(judged) if judged else None,
    }
    by_language: dict[str, list[Sample]] = {}
    for s in samples:
        by_language.setdefault(s.language, []).append(s)
    keys = ("codebleu", "ngram_match", "weighted_ngram_match", "syntax_match", "dataflow_match")
    sums = {k: 0.0 for k in keys}
    counts = {k: 0 for k in keys}
    notes: list[str] = []
    for language, group in sorted(by_language.items()):
        scores = codebleu([s.prediction for s in group], [s.reference for s in group], language)
        notes.extend(scores.notes)
        for k in keys:
            value = getattr(scores, k)
            if value is not None:
                sums[k] += value * len(group)
                counts[k] += len(group)
    for k in keys:
        result[k] = sums[k] / counts[k] if counts[k] else None
    if len(by_language) > 1:
        notes.append("CodeBLEU is the sample-weighted mean of per-language scores: "
                     + ", ".join(f"{lang} {len(g)}" for lang, g in sorted(by_language.items())))
    if any(v is None for v in validity):
        notes.append("syntax validity skipped for languages without a tree-sitter grammar")
    result["notes"] = notes
    return result


if __name__ == "__main__":  # the child of _codebleu_in_child: JSON request on stdin, CodeBleu as JSON out
    import dataclasses

    _request = json.load(sys.stdin)
    print(json.dumps(dataclasses.asdict(_codebleu_here(_request["predictions"], _request["references"],
                                                       _request["language"]))))
