"""greencode.data: corpus sources, deterministic splits, packing, and the bad inputs."""

from __future__ import annotations

import json
import zipfile

import pytest

from greencode.config import DataConfig
from greencode.data import (CodeFile, codexglue_to_text, load_files, load_line_completion_jsonl, load_split,
                            pack, split_files, to_dataset)
from greencode.errors import GreencodeError


def _tree(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("def a():\n    return 1\n")
    (tmp_path / "pkg" / "B.java").write_text("class B { int b() { return 2; } }\n")
    (tmp_path / "pkg" / "empty.py").write_text("\n")
    (tmp_path / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    (tmp_path / "blob.py").write_bytes(b"x = 1\x00\x01\x02")
    (tmp_path / "notes.txt").write_text("not code")
    (tmp_path / ".venv" / "lib" / "site-packages").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "site-packages" / "dep.py").write_text("import os\n")
    return tmp_path


def test_directory_reads_code_sorted_and_counts_non_utf8(tmp_path):
    files = load_files(DataConfig(corpus=str(_tree(tmp_path))))
    assert [f.path for f in files] == ["pkg/B.java", "pkg/a.py"]
    assert [f.language for f in files] == ["java", "python"]
    assert files[1] == CodeFile("pkg/a.py", "def a():\n    return 1\n", "python")
    assert sorted(files.skipped) == ["blob.py", "latin1.py"] and files.skipped_count == 2


def test_language_filter_and_glob(tmp_path):
    _tree(tmp_path)
    java = load_files(DataConfig(corpus=str(tmp_path), language="java"))
    assert [f.path for f in java] == ["pkg/B.java"]
    globbed = load_files(DataConfig(corpus=str(tmp_path / "**" / "*.txt")))
    assert [(f.path.rsplit("/", 1)[-1], f.language) for f in globbed] == [("notes.txt", "text")]


def test_zip_source(tmp_path):
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("java.base/java/lang/Foo.java", "package java.lang;\nclass Foo {}\n")
        zf.writestr("java.base/java/lang/Bad.java", b"class \xff {}")
        zf.writestr("README", "x")
    files = load_files(DataConfig(corpus=str(archive)))
    assert [(f.path, f.language) for f in files] == [("java.base/java/lang/Foo.java", "java")]
    assert files.skipped == ["java.base/java/lang/Bad.java"]


def test_stdlib_is_real_code_without_site_packages():
    files = load_files(DataConfig(max_files=40))
    assert len(files) == 40
    assert all(f.language == "python" and "site-packages" not in f.path for f in files)
    assert [f.path for f in files] == sorted(f.path for f in files)
    assert files == load_files(DataConfig(max_files=40))  # the same sample every time


def test_jsonl_samples_and_corpus(tmp_path):
    path = tmp_path / "test.jsonl"
    rows = [{"input": "<s> import os <EOL> x = <STR_LIT:hi>", "gt": "y = <NUM_LIT:3>"},
            {"input": "<s> def f ( ) :", "gt": "return 1"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_line_completion_jsonl(path) == [(r["input"], r["gt"]) for r in rows]
    files = load_files(DataConfig(corpus=str(path)))
    assert files[0].text == 'import os\nx = "hi" y = 3\n'
    assert codexglue_to_text("<s> a <EOL> b </s>") == "a\nb\n"
    path.write_text('{"input": "x"}\n')
    with pytest.raises(GreencodeError, match="test.jsonl:1"):
        load_line_completion_jsonl(path)


def test_splits_are_deterministic_disjoint_and_sized():
    config = DataConfig(validation_fraction=0.1, test_fraction=0.2)
    files = [CodeFile(f"f{i}.py", "x = 1\n", "python") for i in range(2000)]
    train, validation, test = split_files(files, config)
    assert len(train) + len(validation) + len(test) == 2000
    assert 150 < len(validation) < 250 and 330 < len(test) < 470
    assert {f.path for f in test}.isdisjoint(f.path for f in train)
    # A file's split depends on its path only, not on what else is in the corpus.
    _, _, test_half = split_files(files[:1000], config)
    assert {f.path for f in test_half} == {f.path for f in test if int(f.path[1:-3]) < 1000}
    reseeded = split_files(files, DataConfig(split_seed="other", validation_fraction=0.1, test_fraction=0.2))
    assert [f.path for f in reseeded[2]] != [f.path for f in test]


def test_load_split_picks_one(tmp_path):
    for i in range(30):
        (tmp_path / f"m{i}.py").write_text(f"x = {i}\n")
    config = DataConfig(corpus=str(tmp_path), validation_fraction=0.3, test_fraction=0.3)
    assert load_split(config, "test") == split_files(load_files(config), config)[2]
    with pytest.raises(GreencodeError, match="unknown split"):
        load_split(config, "dev")


@pytest.mark.parametrize("corpus, message", [
    ("/no/such/dir", "does not exist"),
    ("", "data.corpus is empty"),
])
def test_bad_corpus(corpus, message):
    with pytest.raises(GreencodeError, match=message):
        load_files(DataConfig(corpus=corpus))


def test_empty_corpus_names_skipped_files(tmp_path):
    (tmp_path / "bad.py").write_bytes(b"\xff\xfe")
    with pytest.raises(GreencodeError, match=r"no usable .* files \(1 skipped as not UTF-8\)"):
        load_files(DataConfig(corpus=str(tmp_path)))


def test_hub_dataset_offline_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GreencodeError, match="hub is not reachable") as err:
        load_files(DataConfig(corpus="hf:py150"))
    assert "\n" not in str(err.value)


def test_pack_makes_fixed_chunks_with_separators(tiny_llama):
    tokenizer = tiny_llama.tokenizer
    files = [CodeFile(f"f{i}.py", f"def f{i}(x):\n    return x * {i}\n" * 5, "python") for i in range(6)]
    packed = pack(to_dataset(files), tokenizer, seq_len=16)
    stream = [t for f in files for t in tokenizer(f.text, add_special_tokens=False)["input_ids"]
              + [tokenizer.eos_token_id]]
    assert all(len(row) == 16 for row in packed["input_ids"])
    assert [t for row in packed["input_ids"] for t in row] == stream[:len(stream) // 16 * 16]
