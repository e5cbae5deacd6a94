"""Weight forms: the decoder layers' linear weights and the LM head in fewer bytes, with a fast CPU kernel.

At batch 1 a token's cost on CPU is mostly the weights it reads, so the form of the weights sets the speed.
Forms (`[model].weights`):
- `fp32`: as loaded (the model's own dtype), nothing changed.
- `fp16`: fbgemm's fp16 GEMM: weights stored in half precision, products and sums in fp32 (half the bytes,
  results within ~1e-4 of fp32).
- `int8`: fbgemm's dynamic int8 GEMM: int8 weights with one scale per output channel, and each call's input
  quantized to 8 bits on the fly (a quarter of the bytes).
- `auto`: the fastest form whose quality holds at full depth (`greencode eval`), where the machine can run
  it: fp16; fp32 otherwise (GPUs, CPUs without fbgemm, layers that are not nn.Linear).

Measured on this CPU, one thread, a 30-layer SmolLM2 stack of GEMVs: fp32 ~52 ms, int8 (this) ~11-15 ms,
torch's weight-only `_weight_int8pack_mm` ~148 ms and int4 `_weight_int4pack_mm_for_cpu` slower still, torchao
int8 in eager mode ~240 ms (it needs torch.compile to be fast). Embeddings stay as loaded (one row read per token).
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import torch
from torch import nn

from greencode.errors import GreencodeError

FORMS = ("auto", "fp32", "fp16", "int8")
# Fastest form whose quality holds, first. int8 is faster still but lost quality at full depth: `greencode eval`,
# stdlib, 89 samples: ROUGE-L 0.401 against fp32's 0.420 (95%; the bar is 99%), so it runs only when named.
AUTO_ORDER = ("fp16", "fp32")
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
    """An nn.Linear whose weight is prepacked for fbgemm (int8 per output channel, or fp16); fp32 in and out."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, form: str):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.form = form
        weight = weight.detach().float()
        bias = bias.detach().float() if bias is not None else None
        with warnings.catch_warnings():  # torch marks quantized tensors deprecated; fbgemm's GEMM is still the fast one
            warnings.simplefilter("ignore")
            if form == "fp16":
                self._packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)
            else:
                scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
                zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
                qweight = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
                self._packed = torch.ops.quantized.linear_prepack(qweight, bias)
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
            out = torch.ops.quantized.linear_dynamic.default(flat, self._packed, self._reduce_range)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, form={self.form}"


class QuantizedHead(QuantizedLinear):
    """The LM head in a fast form, keeping a reference to its float weight (shared with the embeddings when
    tied, so no copy) for whoever gathers rows of it, e.g. shortlist exit heads."""

    def __init__(self, linear: nn.Linear, form: str):
        super().__init__(linear.weight, linear.bias, form)
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


def resolve_form(requested: str, adapter, device: torch.device | str, dtype: torch.dtype) -> str:
    """The form to use for `requested` on this model and machine; a form that cannot run is one error line."""
    if requested not in FORMS:
        raise GreencodeError(f"[model].weights = {requested!r}: unknown form; use one of {', '.join(FORMS)}")
    runnable = runnable_forms(device, dtype)
    why_not = _unsupported(adapter)
    if requested == "auto":
        return next(f for f in AUTO_ORDER if f in runnable and (f == "fp32" or why_not is None))
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
def apply_weights(adapter, requested: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """Put the decoder layers' linears and the LM head of `adapter.model` in the resolved form; return it."""
    from greencode.model.lean import LeanLlama

    form = resolve_form(requested, adapter, device, dtype)
    if adapter.arch in ("llama", "mistral", "qwen2", "smollm") and LeanLlama.supports(adapter):
        adapter.lean = LeanLlama(adapter, form, QuantizedLinear)  # fuses the float weights, so before quantizing
    if form == "fp32":
        return form
    for parent, attribute, linear in _linears(adapter):
        setattr(parent, attribute, QuantizedLinear(linear.weight, linear.bias, form))
    adapter.model.set_output_embeddings(QuantizedHead(adapter.model.get_output_embeddings(), form))
    return form


def module_bytes(module: nn.Module) -> int:
    """Bytes of weights a pass through `module` reads: its parameters, buffers and packed weights."""
    total = sum(t.numel() * t.element_size() for t in module.parameters(recurse=False))
    total += sum(t.numel() * t.element_size() for t in module.buffers(recurse=False) if t.is_floating_point())
    if isinstance(module, QuantizedLinear):
        return total + module.weight_bytes
    return total + sum(module_bytes(child) for child in module.children())


def describe_weights(loaded, requested: str) -> str:
    """One line for `greencode info`, e.g. 'int8 (auto; fbgemm dynamic int8, 0.26 bytes per fp32 byte)'."""
    how = {"fp32": "as loaded", "fp16": "fbgemm fp16 GEMM", "int8": "fbgemm dynamic int8, per-channel weights"}
    layer = module_bytes(loaded.adapter.layers[0])
    line = f"{loaded.weights} ({how[loaded.weights]}; {layer / 2**20:.2f} MiB read per layer"
    return line + (", chosen by auto)" if requested == "auto" else ")")
