"""The int8 form's SmoothQuant inputs, row-by-row prompt quantization, calibration cache and load-time check."""

import json

import pytest
import torch

from greencode.model.load import load_model
from greencode.model.smoothing import Calibration, fingerprint, smoothing_scales
from greencode.model.weights import INT8_AGREEMENT_BAR, QuantizedLinear, runnable_forms

needs_int8 = pytest.mark.skipif("int8" not in runnable_forms("cpu"), reason="this torch build has no fbgemm")


@pytest.fixture
def cache(tmp_path):
    """A cache folder of its own for the calibration, sharing the converted default model (the tiny models'
    tokenizer) with the user's cache instead of converting it again."""
    from greencode.model.load import DEFAULT_CACHE_NAME, default_model_dir

    (tmp_path / DEFAULT_CACHE_NAME).symlink_to(default_model_dir())
    return tmp_path


def _outlier_inputs(rows: int = 8, features: int = 96, channel: int = 5, size: float = 300.0) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(rows, features)
    x[:, channel] *= size  # one channel far above the rest, as in SmolLM2's MLP inputs
    return x


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def test_smoothing_moves_scale_between_inputs_and_weights_without_changing_the_product():
    x = _outlier_inputs()
    weight = torch.randn(40, 96)
    s = smoothing_scales(x.abs().amax(dim=0), weight)
    assert torch.allclose((x / s) @ (weight * s).T, x @ weight.T, rtol=1e-4, atol=1e-3)
    assert s[5] > 5 * s.median()  # the outlier channel is divided down the most


@needs_int8
def test_smoothed_int8_is_closer_to_float_on_inputs_with_an_outlier_channel():
    x = _outlier_inputs(rows=1)
    linear = torch.nn.Linear(96, 40, bias=False)
    with torch.no_grad():
        want = linear(x)
        plain = QuantizedLinear(linear.weight, None, "int8")(x)
        smoothing = smoothing_scales(x.abs().amax(dim=0), linear.weight)
        smoothed = QuantizedLinear(linear.weight, None, "int8", smoothing)(x)
    assert _relative_error(smoothed, want) < 0.5 * _relative_error(plain, want)


@needs_int8
def test_a_prompt_is_quantized_row_by_row_so_a_loud_row_does_not_blur_a_quiet_one():
    torch.manual_seed(1)
    linear = torch.nn.Linear(96, 40)
    quiet, loud = torch.randn(1, 96), 500 * torch.randn(1, 96)
    quantized = QuantizedLinear(linear.weight, linear.bias, "int8")
    with torch.no_grad():
        alone = quantized(quiet)
        batched = quantized(torch.cat([quiet, loud]))
        want = linear(quiet)
    assert _relative_error(batched[:1], want) < 0.02
    assert _relative_error(batched[:1], alone) < 0.02


@needs_int8
def test_int8_calibration_is_measured_once_cached_and_reused(cache):
    first = load_model("tiny-random-llama", device="cpu", weights="int8", cache=str(cache))
    folder = cache / "int8-calibration"
    key = fingerprint(load_model("tiny-random-llama", device="cpu").adapter)
    facts = json.loads((folder / f"{key}.json").read_text())
    assert 0 <= facts["int8_top1_agreement"] <= 1 and (folder / f"{key}.safetensors").is_file()
    int8 = [m for m in first.model.modules() if isinstance(m, QuantizedLinear) and m.form == "int8"]
    assert int8 and all(m._input_scale is not None for m in int8)  # every int8 linear and the head smoothed
    # the cached figure is what the next load reads (no second measurement): a low one brings the note
    for figure, noted in ((1.0, False), (INT8_AGREEMENT_BAR - 0.1, True)):
        (folder / f"{key}.json").write_text(json.dumps({"int8_top1_agreement": figure}))
        again = load_model("tiny-random-llama", device="cpu", weights="int8", cache=str(cache))
        assert again.weights == "int8" and ("expect lower quality" in again.weights_note) == noted
        assert "\n" not in again.weights_note


@needs_int8
def test_a_torn_calibration_file_is_measured_again_not_a_traceback(cache):
    load_model("tiny-random-llama", device="cpu", weights="int8", cache=str(cache))
    (stored,) = (cache / "int8-calibration").glob("*.safetensors")
    stored.write_bytes(stored.read_bytes()[:100])
    assert Calibration(stored.parent, stored.stem).load() is None
    loaded = load_model("tiny-random-llama", device="cpu", weights="int8", cache=str(cache))
    assert loaded.weights == "int8"
    assert Calibration(stored.parent, stored.stem).load() is not None  # rewritten whole


def test_the_fingerprint_names_the_weights_not_the_folder_they_sit_in(tmp_path):
    from tests.conftest import saved_model

    keys = set()
    for folder in ("one", "two"):
        saved_model("tiny-random-llama", tmp_path / folder)
        keys.add(fingerprint(load_model(str(tmp_path / folder), device="cpu").adapter))
    assert len(keys) == 1
    changed = load_model(str(tmp_path / "one"), device="cpu")
    with torch.no_grad():
        changed.adapter.layers[3].mlp.up_proj.weight.view(-1)[0] += 1.0  # a sampled weight
    assert fingerprint(changed.adapter) not in keys


def test_the_shipped_default_brings_its_calibration_so_a_first_int8_load_measures_nothing():
    from greencode.model.load import ASSETS
    from greencode.model.smoothing import CALIBRATION_FOLDER

    default = load_model("default", device="cpu")
    shipped = Calibration(ASSETS / CALIBRATION_FOLDER, fingerprint(default.adapter))
    stored = shipped.load()
    assert stored is not None and stored[2] >= INT8_AGREEMENT_BAR


@needs_int8
def test_a_cache_that_cannot_take_the_calibration_still_loads_int8(cache):
    (cache / "int8-calibration").write_text("a file where the folder would go")
    loaded = load_model("tiny-random-llama", device="cpu", weights="int8", cache=str(cache))
    assert loaded.weights == "int8"
    assert any(m._input_scale is not None for m in loaded.model.modules() if isinstance(m, QuantizedLinear))


@needs_int8
def test_auto_runs_fp16_when_the_int8_check_fails_even_where_the_record_passed(cache, tmp_path):
    from tests.conftest import saved_model

    model = tmp_path / "model"
    saved_model("tiny-random-llama", model)
    (model / "adaptation").mkdir()
    (model / "adaptation" / "weights_quality.json").write_text(
        json.dumps({"int8": {"rouge_l_vs_fp32": {"python": 1.0, "java": 1.0}}}))
    # a random model's int8 fails the check when first measured: the float layers come back, then go to fp16
    first = load_model(str(model), device="cpu", weights="auto", cache=str(cache))
    assert first.weights == "fp16" and "running fp16 instead" in first.weights_note
    forms = {m.form for m in first.model.modules() if isinstance(m, QuantizedLinear)}
    assert forms == {"fp16"} and not any(isinstance(m, torch.nn.Linear) for m in first.adapter.layers.modules())
    (facts,) = (cache / "int8-calibration").glob("*.json")
    facts.write_text(json.dumps({"int8_top1_agreement": 1.0}))
    assert load_model(str(model), device="cpu", weights="auto", cache=str(cache)).weights == "int8"
    facts.write_text(json.dumps({"int8_top1_agreement": INT8_AGREEMENT_BAR - 0.2}))
    fallback = load_model(str(model), device="cpu", weights="auto", cache=str(cache))
    assert fallback.weights == "fp16" and "running fp16 instead" in fallback.weights_note


@needs_int8
def test_a_calibration_that_misses_a_linear_is_measured_again(cache):
    from safetensors.torch import load_file, save_file

    load_model("tiny-random-llama", device="cpu", weights="int8", cache=str(cache))
    (stored,) = (cache / "int8-calibration").glob("*.safetensors")
    tensors = load_file(stored)
    dropped = next(name for name in tensors if name.endswith("k_proj"))
    save_file({name: t for name, t in tensors.items() if name != dropped}, str(stored))
    loaded = load_model("tiny-random-llama", device="cpu", weights="int8", cache=str(cache))
    assert loaded.weights == "int8"
    assert dropped in load_file(stored)  # measured again and rewritten whole
