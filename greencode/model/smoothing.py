"""SmoothQuant for the int8 form: per-channel input maxima of every linear, measured once per model and cached.

A dynamic int8 GEMM quantizes each input row with one scale, so one outlier channel (SmolLM2-135M has inputs
whose largest channel is ~1,700x the median) flattens every other channel to a few levels. SmoothQuant divides
each input channel by s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha) and multiplies the weight's column j by it:
the product is unchanged, and the quantization error is shared between inputs and weights.

The maxima come from a float forward over a few windows of the standard library's train split (always present:
it is the embedded corpus), cached per model under the cache folder (the default model ships its own in
greencode/assets, so its first int8 load measures nothing). The same windows give the load-time check: the
share of positions whose int8 top-1 token equals the float model's (teacher-forced), kept beside them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

ALPHA = 0.5  # SmoothQuant's default migration strength; 0.5-0.8 measured within 0.4 points here (docs/results.md)
WINDOWS, WINDOW_TOKENS = 4, 512
CALIBRATION_FOLDER = "int8-calibration"  # under the cache folder, and beside a shipped model's quality record
SCORED_EVERY = 4  # the check scores every 4th position: the LM head over all 512 would cost more than the layers


def smoothing_scales(input_maxima: torch.Tensor, weight: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """s per input channel: inputs are divided by s, the weight's columns multiplied by it."""
    weight_maxima = weight.detach().abs().amax(dim=0).float().clamp(min=1e-5)
    return (input_maxima.float().clamp(min=1e-5) ** alpha / weight_maxima ** (1 - alpha)).clamp(min=1e-5)


def calibration_windows(tokenizer, count: int = WINDOWS, length: int = WINDOW_TOKENS) -> list[list[int]]:
    """`count` windows of `length` tokens, one per file, from the stdlib's train split in path order."""
    from greencode.config import DataConfig
    from greencode.data import load_split

    windows = []
    for file in load_split(DataConfig(corpus="stdlib", language="python"), "train")[::97]:
        ids = tokenizer(file.text, add_special_tokens=False)["input_ids"]
        if len(ids) >= length:
            windows.append(ids[:length])
            if len(windows) == count:
                break
    return windows


def calibrated_linears(adapter) -> dict[str, nn.Linear]:
    """Every nn.Linear of the decoder layers and the LM head, by the qualified name its maxima are stored under."""
    modules = dict(adapter.model.named_modules())
    first = next(name for name, module in modules.items() if module is adapter.layers[0])
    prefix = first.rsplit(".", 1)[0] + "."
    head = adapter.model.get_output_embeddings()
    return {name: module for name, module in modules.items()
            if isinstance(module, nn.Linear) and (name.startswith(prefix) or module is head)}


@torch.no_grad()
def measure(adapter, windows: list[list[int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({linear name: max |input| per channel}, the float model's top-1 token at every window position)."""
    maxima: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(module, inputs, output):
            peak = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).abs().amax(dim=0).float()
            maxima[name] = torch.maximum(maxima[name], peak) if name in maxima else peak
        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in calibrated_linears(adapter).items()]
    try:
        top1 = _top1(adapter.model, windows)
    finally:
        for hook in hooks:
            hook.remove()
    return maxima, top1


def _top1(model: nn.Module, windows: list[list[int]]) -> torch.Tensor:
    """The model's top-1 token at every SCORED_EVERY-th position of each window, teacher-forced."""
    device = next(model.parameters()).device
    top1 = []
    for ids in windows:
        scored = torch.arange(SCORED_EVERY - 1, len(ids), SCORED_EVERY, device=device)
        top1.append(model(torch.tensor([ids], device=device), logits_to_keep=scored).logits[0].argmax(-1).cpu())
    return torch.cat(top1)


@torch.no_grad()
def agreement(model: nn.Module, windows: list[list[int]], reference: torch.Tensor) -> float:
    """Share of scored window positions where `model`'s top-1 equals `reference` (teacher-forced)."""
    return float((_top1(model, windows) == reference).float().mean())


def fingerprint(adapter) -> str:
    """A key for one model's weights: its config and a checksum of a strided sample of every parameter (all of
    them would cost ~2 s per load)."""
    # not where the model sits nor which transformers wrote its config
    config = {key: value for key, value in adapter.model.config.to_dict().items()
              if key not in ("_name_or_path", "transformers_version")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(f"alpha={ALPHA} windows={WINDOWS}x{WINDOW_TOKENS} every={SCORED_EVERY}".encode())
    with torch.no_grad():
        for name, tensor in adapter.model.state_dict().items():
            sample = tensor.detach().reshape(-1)[::997].float()
            figures = f"{name}:{tuple(tensor.shape)}:{float(sample.sum()):.6e}:{float(sample.abs().sum()):.6e}"
            digest.update(figures.encode())
    return digest.hexdigest()[:20]


class Calibration:
    """One model's smoothing maxima, the float top-1 on the windows and the int8 check's figure, in
    `folder/<fingerprint>.safetensors` and `.json`: a calibration is read only when both are whole."""

    def __init__(self, folder: Path, key: str):
        self.tensors = folder / f"{key}.safetensors"
        self.facts = folder / f"{key}.json"

    def load(self) -> tuple[dict[str, torch.Tensor], torch.Tensor, float] | None:
        """(maxima by linear name, reference top-1, int8 top-1 agreement), or None when missing or damaged."""
        from safetensors.torch import load_file

        try:
            quality = float(json.loads(self.facts.read_text())["int8_top1_agreement"])
            tensors = load_file(self.tensors)
        except Exception:  # missing, torn or foreign: measure again
            return None
        reference = tensors.pop("__reference_top1__", None)
        return (tensors, reference, quality) if reference is not None and 0 <= quality <= 1 else None

    def save(self, maxima: dict[str, torch.Tensor], reference: torch.Tensor, quality: float) -> None:
        """Tensors first, then the figure that makes them count; best effort: a full or read-only cache only
        means the next load measures again."""
        from safetensors.torch import save_file

        from greencode.files.atomic import atomic_write, atomic_write_text

        tensors = {**{name: t.contiguous() for name, t in maxima.items()}, "__reference_top1__": reference}
        facts = {"int8_top1_agreement": quality, "alpha": ALPHA, "windows": WINDOWS, "window_tokens": WINDOW_TOKENS}
        try:
            self.tensors.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.tensors, lambda path: save_file(tensors, str(path)))
            atomic_write_text(self.facts, json.dumps(facts) + "\n")
        except Exception:  # OSError, or safetensors' own error for the same causes
            pass
