"""Hardening (#16): a damaged or hostile agent file is one line, refused before anything is built."""

from __future__ import annotations

import resource

import pytest
import torch
from safetensors.torch import save_file

from greencode.exits.agent import FORMAT, ExitAgent, build_mlp, save_agent
from greencode.errors import GreencodeError

HIDDEN, EXITS, ARCH = 64, [4, 6, 10], [8, 8]


def _good_metadata() -> dict:
    return {"format": FORMAT, "net_arch": "[8, 8]", "activation": "tanh", "hidden_size": str(HIDDEN),
            "exit_points": "[4, 6, 10]", "model": "tiny", "observation": "final_norm(hidden)",
            "position_feature": "false"}


def _write(path, metadata: dict, tensors: dict | None = None):
    if tensors is None:
        tensors = {key: value.contiguous() for key, value in build_mlp(HIDDEN, ARCH).state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_the_well_formed_file_loads(tmp_path):
    path = save_agent(tmp_path / "agent.safetensors", build_mlp(HIDDEN, ARCH).state_dict(), ARCH, "tanh", HIDDEN,
                      EXITS, "tiny")
    assert ExitAgent.load(path, HIDDEN, EXITS).exit_points == EXITS


CASES = {
    "no hidden_size": ({"hidden_size": None}, "agent metadata has no 'hidden_size'"),
    "non-numeric hidden_size": ({"hidden_size": "sixty-four"}, "'hidden_size' = 'sixty-four' is not a positive integer"),
    "negative hidden_size": ({"hidden_size": "-64"}, "is not a positive integer"),
    "bad exit_points JSON": ({"exit_points": "[4, 6,"}, "'exit_points' = '\\[4, 6,' is not valid JSON"),
    "exit_points an object": ({"exit_points": '{"a": 1}'}, "'exit_points' must be an ascending JSON list"),
    "exit_points missing": ({"exit_points": None}, "agent metadata has no 'exit_points'"),
    "net_arch as a string": ({"net_arch": '"64,64"'}, "'net_arch' must be a JSON list of layer widths"),
    "net_arch not JSON": ({"net_arch": "64,64"}, "'net_arch' = '64,64' is not valid JSON"),
    "net_arch of floats": ({"net_arch": "[8.5, 8]"}, "'net_arch' must be a JSON list"),
    "net_arch vs tensors": ({"net_arch": "[16, 8]"}, "does not match its tensors"),
    "hidden_size vs tensors": ({"hidden_size": "32"}, "does not match its tensors"),
    "unknown activation": ({"activation": "gelu"}, "unknown agent activation 'gelu'"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_metadata_is_one_line(tmp_path, case):
    change, message = CASES[case]
    metadata = {key: value for key, value in {**_good_metadata(), **change}.items() if value is not None}
    path = _write(tmp_path / "agent.safetensors", metadata)
    with pytest.raises(GreencodeError, match=message) as info:
        ExitAgent.load(path, HIDDEN, EXITS)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_huge_declared_net_arch_is_refused_before_allocating(tmp_path):
    # [2000000] hidden units over 64 inputs would be a 512 MB weight: it must be compared with the tensors first.
    path = _write(tmp_path / "agent.safetensors", {**_good_metadata(), "net_arch": "[2000000]"})
    before = _peak_rss_mib()
    with pytest.raises(GreencodeError, match="does not match its tensors"):
        ExitAgent.load(path, HIDDEN, EXITS)
    assert _peak_rss_mib() - before < 200


def test_extra_or_missing_tensors_are_refused(tmp_path):
    tensors = {key: value.contiguous() for key, value in build_mlp(HIDDEN, ARCH).state_dict().items()}
    tensors["9.weight"] = torch.zeros(2, 2)
    with pytest.raises(GreencodeError, match="does not match its tensors"):
        ExitAgent.load(_write(tmp_path / "extra.safetensors", _good_metadata(), tensors), HIDDEN, EXITS)
    del tensors["9.weight"], tensors["0.bias"]
    with pytest.raises(GreencodeError, match="does not match its tensors"):
        ExitAgent.load(_write(tmp_path / "missing.safetensors", _good_metadata(), tensors), HIDDEN, EXITS)


def test_a_truncated_agent_file_is_one_line(tmp_path):
    path = _write(tmp_path / "agent.safetensors", _good_metadata())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(GreencodeError, match="not a greencode agent file"):
        ExitAgent.load(path, HIDDEN, EXITS)


@pytest.mark.parametrize("change, message", [
    ({"observation": "final_norm(hidden) + previous exit state"}, "this engine computes 'final_norm\\(hidden\\)'"),
    ({"position_feature": "maybe"}, "'position_feature' = 'maybe'"),
])
def test_an_agent_observing_what_the_engine_does_not_compute_is_one_line(tmp_path, change, message):
    path = _write(tmp_path / "agent.safetensors", {**_good_metadata(), **change})
    with pytest.raises(GreencodeError, match=message) as info:
        ExitAgent.load(path, HIDDEN, EXITS)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    old = {key: value for key, value in _good_metadata().items() if key != "observation"}  # older files: no key
    assert ExitAgent.load(_write(tmp_path / "old.safetensors", old), HIDDEN, EXITS).exit_points == EXITS
