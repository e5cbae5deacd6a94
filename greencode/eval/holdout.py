"""Which files of a corpus a model's calibration read, so `greencode eval --split all` can leave them out.

The shipped default is calibrated on the train and validation splits (by path hash, greencode/data.py) of
the stdlib and a JDK's src.zip. Its manifest records that as

    "calibration": {"corpora": ["stdlib", "/usr/lib/jvm/.../lib/src.zip"], "splits": ["train", "validation"],
                    "split_seed": "greencode", "validation_fraction": 0.05, "test_fraction": 0.05}

(`calibration_record` writes it). Evaluating every file of one of those corpora leaves out the files in
those splits; any other corpus is evaluated whole.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from greencode.errors import GreencodeError

CALIBRATION_SPLITS = ("train", "validation")


def calibration_record(data_config, corpora: list[str], splits=CALIBRATION_SPLITS) -> dict:
    """What a manifest says about the files calibration read (see the module docstring)."""
    return {"corpora": [str(c) for c in corpora], "splits": list(splits), "split_seed": data_config.split_seed,
            "validation_fraction": data_config.validation_fraction, "test_fraction": data_config.test_fraction}


def calibration_of(manifest: dict, data_config) -> dict | None:
    """The manifest's calibration record. Manifests that only describe their corpus ("corpus": {"python":
    "stdlib", "java": PATH}) were built with the [data] split settings and read the train and validation splits."""
    if manifest.get("calibration"):
        return manifest["calibration"]
    described = manifest.get("corpus") or {}
    corpora = [described[k] for k in ("python", "java") if isinstance(described.get(k), str)
               and (described[k] == "stdlib" or Path(described[k]).suffix or Path(described[k]).is_dir())]
    return calibration_record(data_config, corpora) if corpora else None


def _place(corpus: str) -> str:
    from greencode.data import stdlib_root

    corpus = corpus.strip()
    if corpus == "stdlib":
        return str(stdlib_root().resolve())
    if corpus.startswith("hf:") or any(ch in corpus for ch in "*?["):
        return corpus
    return str(Path(corpus).expanduser().resolve())


def unseen_files(data_config, calibration: dict | None):
    """(every file of [data].corpus that calibration did not read, how many it read and are left out)."""
    from greencode.data import CodeFiles, load_files, split_of

    files = load_files(data_config)
    corpora = (calibration or {}).get("corpora", [])
    if not any(_place(data_config.corpus) == _place(c) for c in corpora):
        return files, 0
    as_calibrated = dataclasses.replace(data_config, split_seed=calibration["split_seed"],
                                        validation_fraction=calibration["validation_fraction"],
                                        test_fraction=calibration["test_fraction"])
    read = set(calibration.get("splits", CALIBRATION_SPLITS))
    kept = CodeFiles([f for f in files if split_of(f.path, as_calibrated) not in read], files.source, files.skipped)
    if not kept:
        raise GreencodeError(f"data.corpus: every file of {data_config.corpus} was used to calibrate the model; "
                             "evaluate another corpus")
    return kept, len(files) - len(kept)
