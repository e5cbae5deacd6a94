"""`greencode eval --split all`: every file of a corpus, less those the model's calibration read."""

from __future__ import annotations

import dataclasses

import pytest

from greencode.config import load_config
from greencode.data import load_split
from greencode.errors import GreencodeError
from greencode.eval.samples import read_corpus
from greencode.eval.holdout import calibration_of, calibration_record, unseen_files
from tests.greencode.eval.test_evaluate import FILES, _config, _quiet, corpus  # noqa: F401 (fixture)


def test_all_uses_every_file_of_a_corpus_calibration_never_read(corpus, tmp_path):  # noqa: F811
    config = _config(corpus, tmp_path, **{"eval.split": "all"})
    files = read_corpus(config, calibration_record(config.data, ["stdlib"]))
    assert len(files) == len(FILES) and files.selection == "all files"
    assert len(read_corpus(_config(corpus, tmp_path))) < len(FILES)  # the test split is a share of them


def test_all_leaves_out_the_calibration_files_and_counts_them(corpus, tmp_path):  # noqa: F811
    config = _config(corpus, tmp_path, **{"eval.split": "all", "data.test_fraction": 0.3})
    # Calibrated with other split settings than the evaluation's: the calibration's own settings decide.
    calibrated_with = dataclasses.replace(config.data, test_fraction=0.5, validation_fraction=0.1)
    record = calibration_record(calibrated_with, [str(corpus) + "/"])  # the same place, spelled differently
    files = read_corpus(config, record)
    held_out = {f.path for f in load_split(calibrated_with, "test")}
    assert {f.path for f in files} == held_out
    excluded = len(FILES) - len(held_out)
    assert files.selection == f"all files not used for calibration ({excluded} calibration files left out)"


def test_eval_reports_the_left_out_files(corpus, tmp_path, monkeypatch):  # noqa: F811
    import greencode.eval.run as run

    config = _config(corpus, tmp_path, samples=1, policies=("full",), **{"eval.split": "all"})
    monkeypatch.setattr(run, "_calibration", lambda config: calibration_record(config.data, [str(corpus)]))
    result, lines = _quiet(config)
    assert any("calibration files left out" in line for line in lines)
    assert "calibration files left out" in result["source"]


def test_a_corpus_wholly_used_for_calibration_is_refused(corpus, tmp_path):  # noqa: F811
    config = _config(corpus, tmp_path, **{"eval.split": "all"})
    record = calibration_record(config.data, [str(corpus)], splits=("train", "validation", "test"))
    with pytest.raises(GreencodeError, match="every file of .* was used to calibrate"):
        read_corpus(config, record)


def test_manifest_corpus_descriptions_give_the_calibrated_corpora():
    data = load_config().data
    described = {"corpus": {"python": "stdlib", "java": "/usr/lib/jvm/x/lib/src.zip", "train_files": {"python": 3}}}
    assert calibration_of(described, data)["corpora"] == ["stdlib", "/usr/lib/jvm/x/lib/src.zip"]
    assert calibration_of({"corpus": {"python": "stdlib", "java": "none found"}}, data)["corpora"] == ["stdlib"]
    assert calibration_of({}, data) is None
    explicit = calibration_record(data, ["stdlib"])
    assert calibration_of({"calibration": explicit, "corpus": described["corpus"]}, data) == explicit


def test_stdlib_all_leaves_out_the_default_calibration_splits():
    data = load_config().data
    files, excluded = unseen_files(data, calibration_record(data, ["stdlib"]))
    assert excluded > 0 and {f.path for f in files} == {f.path for f in load_split(data, "test")}
