"""The quality rule for a weight form: full-depth ROUGE-L against fp32's on held-out code of each language.

`measure_form` runs `greencode eval` (policy `full`) twice per language, in fp32 and in the form, on the same
test-split samples: the stdlib for Python and a JDK's src.zip for Java (or a corpus holding both). The record
it returns is what `greencode.model.weights.passing_forms` reads: `auto` may pick the form for this model when
every language keeps >= QUALITY_RULE of fp32's ROUGE-L.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from greencode.errors import GreencodeError
from greencode.model.weights import FORMS, QUALITY_RULE
from train.assets.calibration import LANGUAGES, jdk_src_zips


def _corpora(config) -> dict[str, str]:
    """{language: corpus} for the evals: stdlib + the JDK's src.zip, or the configured corpus for both."""
    if config.data.corpus != "stdlib":
        return {language: config.data.corpus for language in LANGUAGES}
    java_zip, notes = jdk_src_zips()
    if java_zip is None:
        raise GreencodeError(f"weights quality: no JDK lib/src.zip found ({'; '.join(notes) or 'no JDK installed'}); "
                             "install a JDK with its sources or set data.corpus to a directory with .py and .java files")
    return {"python": "stdlib", "java": str(java_zip)}


def _full_depth(config, form: str, language: str, corpus: str, samples: int, out: Path, echo) -> dict:
    """The `full` row and completions of one eval: {"rouge_l", "tokens_per_s", "samples", "completions"}."""
    from greencode.eval.run import run_eval
    from greencode.eval.store import COMPLETIONS, read_completions

    data = dataclasses.replace(config.data, corpus=corpus, language=language)
    model = dataclasses.replace(config.model, weights=form)
    evaluation = dataclasses.replace(config.eval, samples=samples, policies=["full"], thresholds=[], split="test")
    run = dataclasses.replace(config, data=data, model=model, eval=evaluation)
    result = run_eval(run, out=out, echo=echo, plots=False)  # the record is the product; each eval's table stays
    (row,) = [row for row in result["rows"] if row["policy"] == "full"]
    completions = {key: record["prediction"] for (key, _), record in read_completions(out / COMPLETIONS).items()
                   if record["policy"] == "full"}
    return {"rouge_l": row["rougeL"], "tokens_per_s": row["tokens_per_s"], "samples": result["samples"],
            "completions": completions}


def measure_form(config, form: str, samples: int, output: Path, echo=print) -> dict:
    """{form: the record}: per language, fp32's and the form's ROUGE-L, their ratio, decode tokens/s and the
    share of completions identical to fp32's, with the command that reproduces it."""
    candidates = [f for f in FORMS if f not in ("auto", "fp32")]
    if form not in candidates:
        raise GreencodeError(f"--form {form}: name a form to hold against fp32 ({' or '.join(candidates)})")
    record = {"rouge_l_vs_fp32": {}, "rouge_l": {}, "decode_vs_fp32": {}, "identical_completions": {},
              "samples": {}, "rule": QUALITY_RULE}
    for language, corpus in _corpora(config).items():
        runs = {weights: _full_depth(config, weights, language, corpus, samples, output / f"{language}-{weights}", echo)
                for weights in ("fp32", form)}
        reference, candidate = runs["fp32"], runs[form]
        shared = [key for key in reference["completions"] if key in candidate["completions"]]
        record["rouge_l"][language] = {"fp32": reference["rouge_l"], form: candidate["rouge_l"]}
        record["rouge_l_vs_fp32"][language] = round(candidate["rouge_l"] / max(reference["rouge_l"], 1e-9), 4)
        record["decode_vs_fp32"][language] = round(candidate["tokens_per_s"] / max(reference["tokens_per_s"], 1e-9), 3)
        record["identical_completions"][language] = round(
            sum(reference["completions"][k] == candidate["completions"][k] for k in shared) / max(len(shared), 1), 4)
        record["samples"][language] = min(reference["samples"], candidate["samples"])
    record["passes"] = all(ratio >= QUALITY_RULE for ratio in record["rouge_l_vs_fp32"].values())
    record["command"] = f"greencode train weights --form {form} --samples {samples}"
    record["date"] = datetime.date.today().isoformat()
    return {form: record}
