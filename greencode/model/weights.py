"""Weight forms: the decoder layers' linear weights and the LM head in fewer bytes, with a fast CPU kernel.

At batch 1 a token's cost on CPU is mostly the weights it reads, so the form of the weights sets the speed.
Forms (`[model].weights`):
- `fp32`: as loaded (the model's own dtype), nothing changed.
- `fp16`: fbgemm's fp16 GEMM: weights stored in half precision, products and sums in fp32 (half the bytes,
  results within ~1e-4 of fp32).
- `int8`: fbgemm's dynamic int8 GEMM (int8 weights with one scale per output channel; each call's input
  quantized to 8 bits on the fly) for every linear but the MLP down projections, and the LM head, with
  SmoothQuant inputs (greencode.model.smoothing). The down projections stay fp16: their inputs carry the
  outliers (up to ~1,700x the median channel), and on validation code they were the most sensitive linears
  (docs/results.md).
- `auto`: fp16 where the machine runs it (fp32 otherwise: GPUs, CPUs without fbgemm, layers that are not
  nn.Linear), or int8 for a model whose recorded quality run (QUALITY_RECORD beside its adaptation) says int8
  kept >= 99% of fp32's ROUGE-L at full depth on held-out code of each language.

Measured on this CPU, one thread, a 30-layer SmolLM2 stack of GEMVs: fp32 ~34 ms, fbgemm fp16 ~27 ms, int8 (this)
~12 ms, torch's weight-only `_weight_int8pack_mm` ~83 ms, bf16 F.linear ~33 ms; int4
`_weight_int4pack_mm_for_cpu` and torchao int8 in eager mode were slower still. Embeddings stay as loaded.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from greencode.errors import GreencodeError

FORMS = ("auto", "fp32", "fp16", "int8")
# Fastest form first; int8 only where a quality record says it passed (QUALITY_RULE).
AUTO_ORDER = ("int8", "fp16", "fp32")
QUALITY_RECORD = "weights_quality.json"  # {"int8": {"rouge_l_vs_fp32": {language: ratio}, "command": ...}}
QUALITY_RULE = 0.99  # a form's full-depth ROUGE-L over fp32's, in every language of its record
# int8's load-time check, teacher-forced top-1 agreement with the float model on calibration code. It is a
# guard against a broken calibration, not the quality rule: on the default model 94.9-96.3% went with 95.5-103%
# of fp32's ROUGE-L, too loose a link to decide by.
INT8_AGREEMENT_BAR = 0.9
# The MLP down projections (Llama's down_proj, OPT's fc2) stay fp16 in the int8 form.
FP16_IN_INT8 = ("down_proj", "fc2")
BYTES_PER_WEIGHT = {"fp16": 2, "int8": 1}


@lru_cache(maxsize=None)
def _cpu_has_vnni() -> bool:
    """AVX-512 VNNI / AVX-VNNI accumulate u8 x s8 products in int32, so inputs can use all 8 bits."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def runnable_forms(device: torch.device | str, dtype: torch.dtype = torch.float32) -> tuple[str, ...]:
    """The forms this machine can run for a model on `device` in `dtype`."""
    device = torch.device(device)
    engines = torch.backends.quantized.supported_engines
    fbgemm = "fbgemm" in engines or "x86" in engines
    if device.type == "cpu" and dtype == torch.float32 and fbgemm and hasattr(torch.ops.quantized, "linear_dynamic"):
        return ("fp32", "fp16", "int8")
    return ("fp32",)


class QuantizedLinear(nn.Module):
    """An nn.Linear whose weight is prepacked for fbgemm (int8 per output channel, or fp16); fp32 in and out.

    int8 takes `smoothing` (s per input channel, greencode.model.smoothing) to divide its inputs by, and quantizes
    a batch of rows (a prompt) one row at a time in effect: each row is divided by its own peak before the GEMM's
    one-scale quantization and multiplied back after, so a position's result does not hang on its neighbours'
    outliers (a single row, a decoded token, needs none of it)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, form: str,
                 smoothing: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.form = form
        weight = weight.detach().float()
        bias = bias.detach().float() if bias is not None else None
        self._input_scale = None  # 1 / s per input channel (SmoothQuant), int8 only
        self._bias = None  # int8: added after the GEMM, so per-row peaks do not scale it
        with warnings.catch_warnings():  # torch marks quantized tensors deprecated; fbgemm's GEMM is still the fast one
            warnings.simplefilter("ignore")
            if form == "fp16":
                self._packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)
            else:
                if smoothing is not None:
                    smoothing = smoothing.to(weight.device)
                    weight, self._input_scale = weight * smoothing, 1 / smoothing
                channel = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
                zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
                qweight = torch.quantize_per_channel(weight, channel, zero_points, 0, torch.qint8)
                self._packed, self._bias = torch.ops.quantized.linear_prepack(qweight, None), bias
        self._reduce_range = not _cpu_has_vnni()  # 7-bit inputs where int16 accumulators could saturate
        self.weight_bytes = weight.numel() * BYTES_PER_WEIGHT[form] + (weight.shape[0] * 4 if form == "int8" else 0) \
            + (bias.numel() * 4 if bias is not None else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The ops' overloads are called directly: the packet's call walks its arguments for fake script objects
        # on every call, a cost paid ~120 times per token.
        flat = x.reshape(-1, self.in_features)
        if self.form == "fp16":
            out = torch.ops.quantized.linear_dynamic_fp16.default(flat, self._packed)
        else:
            if self._input_scale is not None:
                flat = flat * self._input_scale
            if flat.shape[0] > 1:
                peaks = flat.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12)
                out = torch.ops.quantized.linear_dynamic.default(flat / peaks, self._packed, self._reduce_range)
                out = out * peaks
            else:
                out = torch.ops.quantized.linear_dynamic.default(flat, self._packed, self._reduce_range)
            if self._bias is not None:
                out = out + self._bias
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        smoothed = ", smoothed" if self._input_scale is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, form={self.form}{smoothed}"


class QuantizedHead(QuantizedLinear):
    """The LM head in a fast form, keeping a reference to its float weight (shared with the embeddings when
    tied, so no copy) for whoever gathers rows of it, e.g. shortlist exit heads."""

    def __init__(self, linear: nn.Linear, form: str, smoothing: torch.Tensor | None = None):
        super().__init__(linear.weight, linear.bias, form, smoothing)
        self.smoothing = smoothing  # shortlist rows smooth their inputs the same way
        # plain attributes, not parameters: the model must not count or save them twice
        self.__dict__["weight"], self.__dict__["bias"] = linear.weight, linear.bias


def _linears(adapter) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, linear) for every linear layer inside the decoder layers."""
    found = []
    for layer in adapter.layers:
        for parent in layer.modules():
            for attribute, child in parent.named_children():
                if isinstance(child, nn.Linear):
                    found.append((parent, attribute, child))
    return found


def _unsupported(adapter) -> str | None:
    """Why this model's layers cannot take a fast form, or None."""
    head = adapter.model.get_output_embeddings()
    if not _linears(adapter) or not isinstance(head, nn.Linear):
        return (f"the {adapter.arch} architecture keeps its weights outside nn.Linear layers, which the "
                "quantizer does not support")
    return None


def passing_forms(record_folder: Path | None) -> tuple[str, ...]:
    """The forms a model's quality record (QUALITY_RECORD in `record_folder`) says kept QUALITY_RULE in every
    language; () without a record, or with one that cannot be read."""
    if record_folder is None:
        return ()
    try:
        record = json.loads((record_folder / QUALITY_RECORD).read_text())
        return tuple(form for form, facts in record.items() if form in FORMS and form != "auto"
                     and facts["rouge_l_vs_fp32"]
                     and all(float(ratio) >= QUALITY_RULE for ratio in facts["rouge_l_vs_fp32"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ()


def resolve_form(requested: str, adapter, device: torch.device | str, dtype: torch.dtype,
                 passing: tuple[str, ...] = ()) -> str:
    """The form to use for `requested` on this model and machine (`passing`: forms auto may pick beyond fp16,
    from the model's quality record); a form that cannot run is one error line."""
    if requested not in FORMS:
        raise GreencodeError(f"[model].weights = {requested!r}: unknown form; use one of {', '.join(FORMS)}")
    runnable = runnable_forms(device, dtype)
    why_not = _unsupported(adapter)
    if requested == "auto":
        return next(f for f in AUTO_ORDER if f in runnable and (f == "fp32" or why_not is None)
                    and (f != "int8" or f in passing))
    if requested == "fp32":
        return requested
    if requested not in runnable:
        reason = "" if torch.device(device).type == "cpu" else f" (fbgemm runs on CPU, not {device})"
        if dtype != torch.float32:
            reason = f" (it needs [model].dtype = \"float32\", not {str(dtype).replace('torch.', '')})"
        raise GreencodeError(f"[model].weights = {requested!r} cannot run here{reason}; this machine can run: "
                             f"{', '.join(runnable)} (or auto)")
    if why_not is not None:
        raise GreencodeError(f"[model].weights = {requested!r}: {why_not}; set [model].weights = \"fp32\"")
    return requested


@torch.no_grad()
def apply_weights(adapter, requested: str, device: torch.device | str, dtype: torch.dtype, tokenizer=None,
                  cache: str = "", record_folder: Path | None = None) -> tuple[str, str]:
    """Put the decoder layers' linears and the LM head of `adapter.model` in the resolved form; return (form, a
    note: "" or one line on a failed load-time check). With a tokenizer, int8 is smoothed and checked against the
    float model on calibration windows (greencode.model.smoothing), both measured once per model and cached;
    a failed check runs fp16 instead under `auto` and int8 with the note when int8 was named.
    `record_folder` holds the model's quality record, if any (`passing_forms`)."""
    form = resolve_form(requested, adapter, device, dtype, passing_forms(record_folder))
    if form != "int8" or tokenizer is None:
        _install(adapter, form)
        return form, ""
    from greencode.files.paths import cache_dir
    from greencode.model.smoothing import (
        CALIBRATION_FOLDER,
        Calibration,
        agreement,
        calibration_windows,
        fingerprint,
        measure,
    )

    key = fingerprint(adapter)
    shipped = Calibration(record_folder / CALIBRATION_FOLDER, key) if record_folder is not None else None
    calibration = Calibration(cache_dir(cache) / CALIBRATION_FOLDER, key)
    stored = next((found for found in (shipped.load() if shipped else None, calibration.load())
                   if found is not None and _covers(adapter, found[0])), None)
    originals = _linears(adapter), adapter.model.get_output_embeddings()
    if stored is not None:
        maxima, _, quality = stored
        _install(adapter, form, maxima)
    else:
        windows = calibration_windows(tokenizer)
        maxima, reference = measure(adapter, windows)
        _install(adapter, form, maxima)
        quality = agreement(adapter.model, windows, reference)
        calibration.save(maxima, reference, quality)
    if quality >= INT8_AGREEMENT_BAR:
        return form, ""
    if requested != "auto":
        return form, _int8_note(quality, "expect lower quality, or set weights = \"fp16\"")
    for parent, attribute, linear in originals[0]:  # the float layers back, then fp16
        setattr(parent, attribute, linear)
    adapter.model.set_output_embeddings(originals[1])
    _install(adapter, "fp16")
    return "fp16", _int8_note(quality, "running fp16 instead")


def _covers(adapter, maxima: dict[str, torch.Tensor]) -> bool:
    """Whether stored maxima name every linear of this model with its input width (else: measure again)."""
    from greencode.model.smoothing import calibrated_linears

    return all(name in maxima and maxima[name].shape == (linear.in_features,)
               for name, linear in calibrated_linears(adapter).items())


def _int8_note(quality: float, then: str) -> str:
    return (f"int8 keeps only {quality:.1%} of the float model's next tokens on calibration code (a sound "
            f"calibration keeps >= {INT8_AGREEMENT_BAR:.0%}); {then}")


def _smoothing(adapter, maxima: dict[str, torch.Tensor]) -> dict[nn.Module, torch.Tensor]:
    """s per int8 linear from its inputs' maxima, one s for the linears of one module that read the same input
    (Q/K/V, gate/up), so that the fused GEMMs of the lean path and the separate ones quantize alike."""
    from greencode.model.smoothing import calibrated_linears, smoothing_scales

    groups: dict[tuple, list[tuple[str, nn.Linear]]] = {}
    for name, linear in calibrated_linears(adapter).items():
        parent, attribute = name.rsplit(".", 1) if "." in name else ("", name)
        if attribute not in FP16_IN_INT8 and name in maxima:
            groups.setdefault((parent, tuple(maxima[name].tolist())), []).append((name, linear))
    smoothing = {}
    for members in groups.values():
        scales = smoothing_scales(maxima[members[0][0]], torch.cat([linear.weight for _, linear in members]))
        smoothing.update({linear: scales for _, linear in members})
    return smoothing


def _install(adapter, form: str, maxima: dict[str, torch.Tensor] | None = None) -> None:
    """Replace the linears and the head with `form`'s (int8 smoothed by `maxima`, by qualified name)."""
    from greencode.model.lean import LeanLlama
    from greencode.model.smoothing import calibrated_linears

    smoothing = _smoothing(adapter, maxima) if maxima and form == "int8" else {}
    if adapter.arch in ("llama", "mistral", "qwen2", "smollm") and LeanLlama.supports(adapter):
        by_linear = {linear: maxima[name] for name, linear in calibrated_linears(adapter).items()
                     if name in maxima} if maxima else {}
        # fuses the float weights, so before quantizing
        adapter.lean = LeanLlama(adapter, form, QuantizedLinear, smoothing, by_linear)
    if form == "fp32":
        return
    for parent, attribute, linear in _linears(adapter):
        if form == "int8" and attribute in FP16_IN_INT8:
            setattr(parent, attribute, QuantizedLinear(linear.weight, linear.bias, "fp16"))
        else:
            setattr(parent, attribute, QuantizedLinear(linear.weight, linear.bias, form, smoothing.get(linear)))
    head = adapter.model.get_output_embeddings()
    adapter.model.set_output_embeddings(QuantizedHead(head, form, smoothing.get(head)))


def module_bytes(module: nn.Module) -> int:
    """Bytes of weights a pass through `module` reads: its parameters, buffers and packed weights."""
    total = sum(t.numel() * t.element_size() for t in module.parameters(recurse=False))
    total += sum(t.numel() * t.element_size() for t in module.buffers(recurse=False) if t.is_floating_point())
    if isinstance(module, QuantizedLinear):
        return total + module.weight_bytes
    return total + sum(module_bytes(child) for child in module.children())


def describe_weights(loaded, requested: str) -> str:
    """One line for `greencode info`, e.g. 'int8 (auto; fbgemm dynamic int8, 0.26 bytes per fp32 byte)'."""
    how = {"fp32": "as loaded", "fp16": "fbgemm fp16 GEMM",
           "int8": "fbgemm dynamic int8, per-channel weights, SmoothQuant inputs, MLP down in fp16"}
    layer = module_bytes(loaded.adapter.layers[0])
    line = f"{loaded.weights} ({how[loaded.weights]}; {layer / 2**20:.2f} MiB read per layer"
    line += ", chosen by auto)" if requested == "auto" else ")"
    note = getattr(loaded, "weights_note", "")
    return f"{line}: {note}" if note else line
