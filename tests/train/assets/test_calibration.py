import zipfile

import pytest
import torch

from greencode.config import load_config
from greencode.errors import GreencodeError
from train.assets.calibration import (CalibrationStates, calibration_corpus, coverage, jdk_src_zips, shortlist_ids,
                               token_counts)


def test_a_dangling_src_zip_is_skipped_and_named(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)  # only the folder given is looked at
    (tmp_path / "jdk-a" / "lib").mkdir(parents=True)
    (tmp_path / "jdk-a" / "lib" / "src.zip").symlink_to("../../missing/src.zip")
    found, notes = jdk_src_zips(tmp_path)
    assert found is None and "jdk-a/lib/src.zip: dangling link" in notes[0]
    (tmp_path / "jdk-b" / "lib").mkdir(parents=True)
    with zipfile.ZipFile(tmp_path / "jdk-b" / "lib" / "src.zip", "w") as archive:
        archive.writestr("java.base/A.java", "class A {}\n")
    assert jdk_src_zips(tmp_path)[0] == tmp_path / "jdk-b" / "lib" / "src.zip"


def test_a_corpus_without_python_is_one_clear_error(tmp_path):
    (tmp_path / "A.java").write_text("class A { int x() { return 1; } }\n")
    config = load_config(overrides={"data.corpus": str(tmp_path), "data.validation_fraction": 0.0,
                                    "data.test_fraction": 0.0})
    with pytest.raises(GreencodeError, match=f"calibration corpus {tmp_path}: no python files in its train split"):
        calibration_corpus(config, "train")


def test_the_shortlist_weighs_languages_equally_and_reports_coverage(tiny_llama):
    from greencode.data import CodeFile

    tokenizer = tiny_llama.tokenizer
    python = [CodeFile("a.py", "def f(x):\n    return x\n" * 50, "python")]
    java = [CodeFile("A.java", "class A { int f(int x) { return x; } }\n", "java")]
    counts = {"python": token_counts(python, tokenizer, 0, log=lambda line: None),
              "java": token_counts(java, tokenizer, 0, log=lambda line: None)}
    ids = shortlist_ids(counts, 8)
    java_ids = set(tokenizer("class A { int f(int x) { return x; } }\n", add_special_tokens=False)["input_ids"])
    assert java_ids & set(ids.tolist())  # the short Java file is not drowned by 50x more Python
    assert coverage(shortlist_ids(counts, 10_000), counts["python"]) == 1.0


def test_states_round_trip_and_select_by_language(tmp_path):
    states = CalibrationStates({4: torch.randn(6, 8).half()}, torch.randn(6, 8).half(),
                               torch.randint(0, 100, (6, 3)), torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1]))
    states.save(tmp_path / "s.safetensors", {"seed": 0})
    again, meta = CalibrationStates.load(tmp_path / "s.safetensors")
    assert meta == {"seed": 0} and torch.equal(again.exits[4], states.exits[4])
    assert again.only("java").count == 3 and again.spread(2).count == 2


def test_state_parts_are_reused_and_a_language_short_of_the_budget_is_reported(tiny_llama, tmp_path, monkeypatch):
    from greencode.data import CodeFile
    from train.assets.calibration import cached_states, collect_states

    files = {"python": [CodeFile(f"m{n}.py", f"def f{n}(x):\n    return x + {n}\n" * 12, "python") for n in range(40)],
             "java": [CodeFile("A.java", "class A { int f(int x) { return x; } }\n" * 6, "java")]}
    monkeypatch.setattr("train.assets.calibration.PART_WINDOWS", 4)  # several parts from a few windows
    lines = []
    states, short = cached_states(tiny_llama, files, [4, 6], 256, 32, 0, tmp_path / "s.safetensors", lines.append)
    assert set(short) == {"java"} and short["java"] < 256  # one small Java file cannot give 256 tokens
    assert any(line.startswith("calibration corpus too small: java has") for line in lines)
    assert states.count == 256 + short["java"] and set(states.exits) == {4, 6}
    assert len(list(tmp_path.glob("s.part*.safetensors"))) > 1  # several parts, read back into one set
    lines.clear()
    again, _ = cached_states(tiny_llama, files, [4, 6], 256, 32, 0, tmp_path / "s.safetensors", lines.append)
    assert any(line.startswith("reusing") for line in lines) and not any("caching" in line for line in lines)
    assert torch.equal(again.exits[6], states.exits[6]) and torch.equal(again.target_ids, states.target_ids)
    first = collect_states(tiny_llama, [("python", [1, 2, 3])], [4, 6], log=lambda line: None)
    assert first.count == 3 and first.final.dtype == torch.float16


def test_a_language_without_one_long_enough_file_is_one_clear_line(tiny_llama, tmp_path):
    from greencode.data import CodeFile
    from train.assets.calibration import cached_states

    files = {"python": [CodeFile("m.py", "def f(x):\n    return x\n" * 40, "python")],
             "java": [CodeFile("A.java", "class A {}\n", "java")]}
    with pytest.raises(GreencodeError, match="calibration corpus too small: java has no file of at least 32 tokens"):
        cached_states(tiny_llama, files, [4, 6], 256, 32, 0, tmp_path / "s.safetensors", lambda line: None)
    assert not list(tmp_path.glob("*.safetensors"))


def test_an_unreadable_state_part_is_made_again(tiny_llama, tmp_path):
    from greencode.data import CodeFile
    from train.assets.calibration import cached_states

    files = {lang: [CodeFile(f"m.{lang}", "def f(x):\n    return x\n" * 40, lang)] for lang in ("python", "java")}
    first, _ = cached_states(tiny_llama, files, [4], 64, 32, 0, tmp_path / "s.safetensors", lambda line: None)
    part = next(tmp_path.glob("s.part*.safetensors"))
    part.write_bytes(b"not a safetensors file")
    again, _ = cached_states(tiny_llama, files, [4], 64, 32, 0, tmp_path / "s.safetensors", lambda line: None)
    assert torch.equal(again.exits[4], first.exits[4])
