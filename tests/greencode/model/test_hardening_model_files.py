"""Hardening (#16): damaged model files and unusable devices are one line, before any weights load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from greencode.errors import GreencodeError
from greencode.model.load import load_model
from tests.conftest import saved_model
from tests.cli import REPO, run_cli



@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    return saved_model("tiny-random-gpt2", tmp_path_factory.mktemp("model") / "good")


def _damaged(good_dir: Path, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(good_dir, copy)
    damage(copy)
    return copy


def _truncate(directory: Path) -> None:
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])


def _header_only(directory: Path) -> None:
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:8 + int.from_bytes(data[:8], "little")])


DAMAGES = {
    "truncated safetensors": (_truncate, "model.safetensors: truncated or not a safetensors file"),
    "header-only safetensors": (_header_only, "model.safetensors: truncated or not a safetensors file"),
    "garbage safetensors": (lambda d: (d / "model.safetensors").write_bytes(b"\x00garbage" * 64),
                            "model.safetensors: truncated or not a safetensors file"),
    "config.json not JSON": (lambda d: (d / "config.json").write_text("{not json"), "config.json: not valid JSON"),
    "config.json a list": (lambda d: (d / "config.json").write_text("[]"), "config.json: must be a JSON object"),
    "config.json unknown type": (lambda d: (d / "config.json").write_text('{"model_type": "nosuch"}'),
                                 "cannot load a causal LM from it"),
}


@pytest.mark.parametrize("case", DAMAGES)
def test_damaged_model_directory_is_one_line(good_dir, tmp_path, case):
    damage, message = DAMAGES[case]
    directory = _damaged(good_dir, tmp_path, damage)
    with pytest.raises(GreencodeError, match=message) as info:
        load_model(str(directory), device="cpu")
    assert "\n" not in str(info.value)


def test_the_intact_copy_still_loads(good_dir):
    assert load_model(str(good_dir), device="cpu").num_layers == 12


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory):
    """A small GGUF written by the gguf package (a header, one tensor): what a truncated copy is cut from."""
    import gguf
    import numpy as np

    path = tmp_path_factory.mktemp("gguf") / "whole.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((64, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, gguf.GGUFReader(str(path)).data_offset


@pytest.mark.parametrize("cut", ["empty", "magic", "first 32 bytes", "header only", "half the tensor"])
def test_truncated_gguf_is_one_line(small_gguf, tmp_path, cut):
    whole, data_offset = small_gguf
    length = {"empty": 0, "magic": 4, "first 32 bytes": 32, "header only": data_offset,
              "half the tensor": data_offset + 64 * 16 * 4 // 2}[cut]
    target = tmp_path / "model.gguf"
    target.write_bytes(whole.read_bytes()[:length])
    with pytest.raises(GreencodeError, match="model.gguf: (not a GGUF file or truncated|truncated)") as info:
        load_model(str(target), device="cpu")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("device, message", [
    ("bogus", "'bogus' is not a device name; use auto, cpu, cuda or cuda:N"),
    ("cuda:99", "cuda:99"),
    ("mps", "'mps': not available here"),
])
def test_unusable_device_is_one_line(device, message):
    import torch

    if device == "cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    with pytest.raises(GreencodeError, match=message):
        load_model("tiny-random-llama", device=device)


def test_cuda_on_a_cpu_only_torch_from_the_cli():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    result = run_cli("info", "--model.spec", "tiny-random-llama", "--model.device", "cuda", cwd=REPO)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "greencode: error: [model].device 'cuda': this torch has no usable CUDA GPU")
