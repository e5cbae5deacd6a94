"""Hardening (#26): a model directory's config.json, greencode.json and adaptation manifest with wrong
types, missing keys or bytes that are not UTF-8 are one line each, naming the file and the fix."""

from __future__ import annotations

import json
import shutil

import pytest

from greencode.errors import GreencodeError
from greencode.model.load import load_model
from tests.conftest import saved_model

ADAPTATION = {"hidden_size": 64, "num_layers": 12, "exit_maps": "exit_maps.safetensors", "exit_points": [4, 6, 10],
              "agent": "agent.safetensors"}


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    return saved_model("tiny-random-llama", tmp_path_factory.mktemp("model") / "good")


def _config(key, value):
    def damage(directory):
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**config, key: value}))
    return damage


def _write(name: str, data: bytes):
    def damage(directory):
        (directory / name).parent.mkdir(exist_ok=True)
        (directory / name).write_bytes(data)
    return damage


def _manifest(**changes):
    manifest = {key: value for key, value in {**ADAPTATION, **changes}.items() if value is not None}
    return _write("adaptation/manifest.json", json.dumps(manifest).encode())


CASES = {
    "layers 'many'": (_config("num_hidden_layers", "many"),
                      'config.json: num_hidden_layers must be a positive integer, not "many"; restore'),
    "hidden_size '64'": (_config("hidden_size", "64"), 'config.json: hidden_size must be a positive integer, not "64"'),
    "unknown model_type": (_config("model_type", "nosuch"), "cannot load a causal LM from it .*model type `nosuch`"),
    "greencode.json [1]": (_write("greencode.json", b"[1]"), "greencode.json: must be a JSON object, not list; fix or "
                                                             "delete it"),
    "greencode.json not UTF-8": (_write("greencode.json", b"\xff\xfe{}"), "greencode.json: unreadable "
                                                                         r"\(UnicodeDecodeError: .*\); fix or delete it"),
    "manifest [1]": (_write("adaptation/manifest.json", b"[1]"), "adaptation/manifest.json: must be a JSON object, "
                                                                 "not list; build it again"),
    "manifest not UTF-8": (_write("adaptation/manifest.json", b"\xff{"), "adaptation/manifest.json: unreadable "
                                                                        r"\(UnicodeDecodeError"),
    "manifest without exit_maps": (_manifest(exit_maps=None), "adaptation/manifest.json: no 'exit_maps'; build the "
                                                              "adaptation again"),
    "manifest without exit_points": (_manifest(exit_points=None), "adaptation/manifest.json: no 'exit_points'"),
    "manifest hidden_size '64'": (_manifest(hidden_size="64"), 'adaptation/manifest.json: hidden_size must be int, '
                                                               'not "64"'),
    "manifest exit_points 'all'": (_manifest(exit_points="all"), "exit_points must be a list of integers"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_model_file_is_one_line(good_dir, tmp_path, case):
    damage, message = CASES[case]
    directory = tmp_path / "model"
    shutil.copytree(good_dir, directory)
    damage(directory)
    with pytest.raises(GreencodeError, match=message) as raised:
        load_model(str(directory), device="cpu")
    assert "\n" not in str(raised.value) and str(directory) in str(raised.value)
