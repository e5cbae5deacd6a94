"""`greencode train weights`: a weight form held against fp32 at full depth, per language, and the record auto reads."""

import json
import shutil
import sysconfig
from pathlib import Path

import pytest

from greencode.model.weights import QUALITY_RECORD, passing_forms, runnable_forms
from tests.cli import run_cli

STDLIB = Path(sysconfig.get_paths()["stdlib"])
needs_int8 = pytest.mark.skipif("int8" not in runnable_forms("cpu"), reason="this torch build has no fbgemm")


def _two_languages(root: Path) -> Path:
    """A small corpus holding both languages: stdlib Python files and generated Java classes."""
    root.mkdir()
    for name in ("textwrap.py", "string.py", "bisect.py", "heapq.py", "colorsys.py", "fnmatch.py"):
        shutil.copy(STDLIB / name, root / name)
    for index in range(6):
        methods = "\n".join(f"    public int method{k}(int value) {{\n        return value * {k} + {index};\n    }}\n"
                            for k in range(12))
        (root / f"Example{index}.java").write_text(f"public class Example{index} {{\n{methods}}}\n")
    return root


@needs_int8
def test_the_record_compares_the_form_with_fp32_on_the_same_samples_of_each_language(tmp_path):
    from tests.conftest import saved_model

    corpus = _two_languages(tmp_path / "corpus")
    model = tmp_path / "model"
    saved_model("tiny-random-llama", model)
    (model / "adaptation").mkdir()
    (model / "adaptation" / QUALITY_RECORD).write_text(json.dumps({"fp16": {"rouge_l_vs_fp32": {"python": 1.0}}}))
    ran = run_cli("train", "weights", "--form", "int8", "--samples", "1", "--output", tmp_path / "runs",
                  "--install", "--model.spec", model, "--model.device", "cpu",
                  "--eval.max_new_tokens", "3", "--energy.source", "estimate", "--data.corpus", corpus,
                  "--data.test_fraction", "0.5")
    assert ran.returncode == 0, ran.stderr
    record = json.loads((tmp_path / "runs" / QUALITY_RECORD).read_text())["int8"]
    assert set(record["rouge_l_vs_fp32"]) == {"python", "java"}
    for language in ("python", "java"):
        assert record["samples"][language] == 1
        assert set(record["rouge_l"][language]) == {"fp32", "int8"}
        assert 0 <= record["identical_completions"][language] <= 1
        assert (tmp_path / "runs" / f"{language}-int8" / "completions.jsonl").is_file()
        assert not (tmp_path / "runs" / f"{language}-int8" / "quality.png").exists()  # no plots for a record
    assert record["passes"] == (passing_forms(tmp_path / "runs") == ("int8",))
    installed = json.loads((model / "adaptation" / QUALITY_RECORD).read_text())
    assert set(installed) == {"fp16", "int8"}  # merged into the model's own record, not the package's
    assert "ROUGE-L" in ran.stdout and ("passes" in ran.stdout or "fails" in ran.stdout)


def test_install_needs_a_model_with_a_folder_for_the_record(tmp_path):
    ran = run_cli("train", "weights", "--install", "--output", tmp_path, "--model.spec", "tiny-random-llama")
    assert ran.returncode != 0 and "no folder to keep a record" in ran.stderr and "Traceback" not in ran.stderr
    assert not (tmp_path / "python-fp32").exists()


@pytest.mark.parametrize("form", ["fp32", "auto", "int3"])
def test_a_form_that_cannot_be_held_against_fp32_is_one_line_before_any_eval(tmp_path, form):
    ran = run_cli("train", "weights", "--form", form, "--output", tmp_path, "--model.spec", "tiny-random-llama")
    assert ran.returncode != 0 and "name a form" in ran.stderr and "Traceback" not in ran.stderr
    assert not (tmp_path / "python-fp32").exists()  # refused before the first eval ran
