"""A lean Llama decoder layer: the same arithmetic as transformers' LlamaDecoderLayer, without its plumbing.

transformers' layer call goes through keyword handling, deprecation wrappers, the attention-interface
registry and a module call per projection; on a 135M model at batch 1 that Python is a large share of a
token. This path runs each layer as one function over plain tensors: RMSNorm (torch's fused kernel, equal
bit for bit to LlamaRMSNorm's ops in fp32), Q/K/V projections (one fused GEMM when the weights are in a fast
form, where fusing cannot change a single output: int8 has per-channel scales and one input scale per call,
fp16 sums each output alone), rotary on Q and K together (a rolled copy times a sign-folded sine: the same
products as rotate_half), the KV cache, SDPA with grouped K/V heads, the output projection and the gated MLP.
In fp32 the projections stay separate, so `full` stays token-for-token equal to HF `generate`.

State propagation (`StackedKV`) fills the K/V of every layer a token skipped in one op sequence: one RMSNorm
of the exited state, the skipped layers' K/V projections stacked (each layer's input-norm weight folded into
its rows) in one GEMM per run of layers between exit points, rotary once, one cache write.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def rotary_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' (B, T, D) cos/sin as lean rotary tables shaped (B, T, 1, D) for (B, T, heads, D) states:
    cos, and sin with its first half negated, so that x*cos + roll(x)*sin' == x*cos + rotate_half(x)*sin."""
    half = sin.shape[-1] // 2
    signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
    return cos.unsqueeze(2), signed.unsqueeze(2)


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary position on (..., D) states: the products of x*cos + rotate_half(x)*sin, bit for bit."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


def _fused(modules: list[nn.Module], form: str, linear: type | None, smoothing: dict) -> nn.Module | None:
    """One GEMM for several projections of the same input, in the weights' fast form (None in fp32).
    `linear` is greencode.model.weights.QuantizedLinear, handed in so the two modules import one way; `smoothing`
    maps a linear to its int8 input smoothing (one for projections that share an input)."""
    if form == "fp32" or linear is None:
        return None
    bias = None
    if modules[0].bias is not None:
        bias = torch.cat([m.bias for m in modules])
    return linear(torch.cat([m.weight for m in modules]), bias, form, smoothing.get(modules[0]))


@dataclass
class _LeanLayer:
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    eps: float
    attn: nn.Module  # q_proj, k_proj, v_proj, o_proj (read after the weights' form is applied)
    mlp: nn.Module  # gate_proj, up_proj, down_proj, act_fn
    qkv: nn.Module | None  # fused Q/K/V in a fast form
    gate_up: nn.Module | None  # fused gate/up in a fast form


class LeanLlama:
    """Decoder layers of a Llama-family model as plain functions over a KV cache with `update()`."""

    def __init__(self, adapter, form: str, linear: type | None = None, smoothing: dict | None = None,
                 maxima: dict | None = None):
        config = adapter.config
        self.hidden_size = config.hidden_size
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.q_size, self.kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.form, self.linear = form, linear
        self.layers = []
        smoothing, maxima = smoothing or {}, maxima or {}
        folded = []  # per layer: its K and V rows times its input-norm weight (state propagation's GEMM)
        # per layer: max |input| per channel of the un-weighted norm that propagation multiplies by those rows
        # (the K/V projections' input maxima over the norm weight), for int8 smoothing; None without maxima
        self.kv_input_maxima = []
        for layer in adapter.layers:
            attn, mlp = layer.self_attn, layer.mlp
            projections = [attn.q_proj, attn.k_proj, attn.v_proj]
            self.layers.append(_LeanLayer(
                layer.input_layernorm.weight, layer.post_attention_layernorm.weight,
                layer.input_layernorm.variance_epsilon, attn, mlp, _fused(projections, form, linear, smoothing),
                _fused([mlp.gate_proj, mlp.up_proj], form, linear, smoothing)))
            folded.append(torch.cat([attn.k_proj.weight, attn.v_proj.weight]).float()
                          * layer.input_layernorm.weight.float())
            seen = maxima.get(attn.k_proj)
            self.kv_input_maxima.append(None if seen is None else
                                        seen / layer.input_layernorm.weight.detach().float().abs().clamp(min=1e-6))
        # (L * 2 * kv_size, d) in float: a run of skipped layers is a run of rows, packed per range on demand
        self.kv_rows = torch.cat(folded).detach()
        self.same_eps = len({p.eps for p in self.layers}) == 1

    @staticmethod
    def supports(adapter) -> bool:
        """Plain Llama layers in fp32 activations (the arithmetic above is LlamaDecoderLayer's, no more)."""
        config = adapter.config
        layer = adapter.layers[0]
        return (adapter.model.dtype == torch.float32 and config.hidden_act == "silu"
                and not getattr(config, "attention_bias", False) and not getattr(config, "mlp_bias", False)
                and getattr(config, "sliding_window", None) is None
                and type(layer).__name__ in ("LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer"))

    def _qkv(self, p: _LeanLayer, normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q and K side by side, V) of normed (B, T, d) states, as (B, T, heads + kv_heads, D), (B, T, kv_heads, D)."""
        batch, steps, _ = normed.shape
        if p.qkv is not None:
            qkv = p.qkv(normed).view(batch, steps, -1, self.head_dim)
            return qkv[:, :, :self.heads + self.kv_heads], qkv[:, :, self.heads + self.kv_heads:]
        qk = torch.cat((p.attn.q_proj(normed), p.attn.k_proj(normed)), dim=-1)
        return qk.view(batch, steps, -1, self.head_dim), p.attn.v_proj(normed).view(batch, steps, -1, self.head_dim)

    def run(self, index: int, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], cache) -> torch.Tensor:
        """One decoder layer on (B, T, d) states whose rotary tables (`rotary_tables`) are `rotary`, appending
        to `cache`."""
        p = self.layers[index]
        batch, steps, _ = hidden.shape
        qk, v = self._qkv(p, F.rms_norm(hidden, (self.hidden_size,), p.input_norm, p.eps))
        qk = _rotate(qk, *rotary)
        q, k, v = qk[:, :, :self.heads].transpose(1, 2), qk[:, :, self.heads:].transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, index)
        past = k.shape[2] - steps
        mask = None
        if steps > 1 and past > 0:  # a prompt after a cached prefix: causal, offset by the prefix
            mask = torch.ones(steps, k.shape[2], dtype=torch.bool, device=q.device).tril(past)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling,
                                                  is_causal=steps > 1 and past == 0, enable_gqa=True)
        hidden = hidden + p.attn.o_proj(attended.transpose(1, 2).reshape(batch, steps, -1))
        normed = F.rms_norm(hidden, (self.hidden_size,), p.post_norm, p.eps)
        if p.gate_up is not None:
            gate, up = p.gate_up(normed).chunk(2, dim=-1)
        else:
            gate, up = p.mlp.gate_proj(normed), p.mlp.up_proj(normed)
        return hidden + p.mlp.down_proj(F.silu(gate) * up)

    def kv(self, index: int, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]):
        """The keys (with rotary) and values layer `index` caches for input states `hidden`, one layer at a
        time (the reference StackedKV is checked against)."""
        p = self.layers[index]
        normed = F.rms_norm(hidden, (self.hidden_size,), p.input_norm, p.eps)
        batch, steps, _ = normed.shape
        k = p.attn.k_proj(normed).view(batch, steps, -1, self.head_dim)
        v = p.attn.v_proj(normed).view(batch, steps, -1, self.head_dim)
        return _rotate(k, *rotary).transpose(1, 2), v.transpose(1, 2)


class StackedKV:
    """State propagation for a lean model: the K/V of layers start..L-1 of one exited state in one op sequence.

    The stacked, norm-folded K/V rows are packed in the weights' form once per run of layers between two
    consecutive `boundaries` (the exit points and L) at engine build, so a token that leaves at an exit point
    pays one GEMM per run it skipped (one in fp32, where the rows are a plain view) and no per-layer Python."""

    def __init__(self, lean: LeanLlama, boundaries: list[int]):
        self.lean = lean
        self.num_layers = len(lean.layers)
        self.boundaries = sorted({b for b in boundaries if 0 < b < self.num_layers} | {self.num_layers})
        self.runs = {}  # start layer -> the packed K/V rows of layers start..next boundary - 1
        if lean.form != "fp32" and lean.linear is not None:
            starts = [b for b in self.boundaries if b < self.num_layers]
            for start, stop in zip(starts, self.boundaries[1:]):
                self.runs[start] = self._packed(start, stop)

    def _packed(self, start: int, stop: int):
        """Layers start..stop-1's K/V rows in the weights' form; int8 smoothed for their shared input, the
        un-weighted norm of the exited state (its maxima: the largest any of these layers saw)."""
        from greencode.model.smoothing import smoothing_scales

        lean, rows = self.lean, 2 * self.lean.kv_size
        weight = lean.kv_rows[start * rows:stop * rows]
        seen = lean.kv_input_maxima[start:stop]
        smoothing = None
        if lean.form == "int8" and seen and all(m is not None for m in seen):
            smoothing = smoothing_scales(torch.stack(seen).amax(dim=0), weight)
        return lean.linear(weight, None, lean.form, smoothing)

    def _projections(self, start: int, normed: torch.Tensor) -> torch.Tensor:
        """(B, T, (L - start) * 2 * kv_size) K/V of layers start..L-1 for normed states."""
        lean = self.lean
        if not self.runs:
            return F.linear(normed, lean.kv_rows[start * 2 * lean.kv_size:])
        if start not in self.runs:  # a start that is no boundary: its own run up to the next one, packed once
            self.runs[start] = self._packed(start, next(b for b in self.boundaries if b > start))
        parts, layer = [], start
        while layer < self.num_layers:
            parts.append(self.runs[layer](normed))
            layer = next(b for b in self.boundaries if b > layer)
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def __call__(self, start: int, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], cache) -> None:
        """Append the K/V layers start..L-1 cache for (B, T, d) states `hidden` to `cache`."""
        lean = self.lean
        count = self.num_layers - start
        if count <= 0:
            return
        batch, steps, _ = hidden.shape
        normed = F.rms_norm(hidden, (lean.hidden_size,), None, lean.layers[start].eps)
        kv = self._projections(start, normed).view(batch, steps, count, 2, lean.kv_heads, lean.head_dim)
        cos, signed_sin = rotary
        keys = _rotate(kv[:, :, :, 0], cos.unsqueeze(2), signed_sin.unsqueeze(2))
        # (B, T, layers, heads, D) -> (layers, B, heads, T, D)
        cache.update_range(start, keys.permute(2, 0, 3, 1, 4), kv[:, :, :, 1].permute(2, 0, 3, 1, 4))
