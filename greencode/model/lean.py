"""A lean Llama decoder layer: the same arithmetic as transformers' LlamaDecoderLayer, without its plumbing.

transformers' layer call goes through keyword handling, deprecation wrappers, the attention-interface
registry and a module call per projection; on a 135M model at batch 1 that Python is a large share of a
token. This path runs each layer as one function over plain tensors: RMSNorm, Q/K/V projections (one fused
GEMM when the weights are in a fast form, where fusing cannot change a single output: int8 has per-channel
scales and one input scale per call, fp16 sums each output alone), rotary, the KV cache, SDPA with grouped
K/V heads, the output projection and the gated MLP. State propagation reads one fused K/V projection.
In fp32 the projections stay separate, so `full` stays token-for-token equal to HF `generate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm's arithmetic, in its order (fp32 models only: see LeanLlama.supports)."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _fused(modules: list[nn.Module], form: str, linear: type | None) -> nn.Module | None:
    """One GEMM for several projections of the same input, in the weights' fast form (None in fp32).
    `linear` is greencode.model.weights.QuantizedLinear, handed in so the two modules import one way."""
    if form == "fp32" or linear is None:
        return None
    bias = None
    if modules[0].bias is not None:
        bias = torch.cat([m.bias for m in modules])
    return linear(torch.cat([m.weight for m in modules]), bias, form)


@dataclass
class _LeanLayer:
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    eps: float
    attn: nn.Module  # q_proj, k_proj, v_proj, o_proj (read after the weights' form is applied)
    mlp: nn.Module  # gate_proj, up_proj, down_proj, act_fn
    qkv: nn.Module | None  # fused Q/K/V in a fast form
    kv: nn.Module | None  # fused K/V in a fast form (state propagation)
    gate_up: nn.Module | None  # fused gate/up in a fast form


class LeanLlama:
    """Decoder layers of a Llama-family model as plain functions over a KV cache with `update()`."""

    def __init__(self, adapter, form: str, linear: type | None = None):
        config = adapter.config
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.q_size, self.kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.layers = []
        for layer in adapter.layers:
            attn, mlp = layer.self_attn, layer.mlp
            projections = [attn.q_proj, attn.k_proj, attn.v_proj]
            self.layers.append(_LeanLayer(
                layer.input_layernorm.weight, layer.post_attention_layernorm.weight,
                layer.input_layernorm.variance_epsilon, attn, mlp, _fused(projections, form, linear),
                _fused(projections[1:], form, linear), _fused([mlp.gate_proj, mlp.up_proj], form, linear)))

    @staticmethod
    def supports(adapter) -> bool:
        """Plain Llama layers in fp32 activations (the arithmetic above is LlamaDecoderLayer's, no more)."""
        config = adapter.config
        layer = adapter.layers[0]
        return (adapter.model.dtype == torch.float32 and config.hidden_act == "silu"
                and not getattr(config, "attention_bias", False) and not getattr(config, "mlp_bias", False)
                and getattr(config, "sliding_window", None) is None
                and type(layer).__name__ in ("LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer"))

    def _qkv(self, p: _LeanLayer, normed: torch.Tensor):
        if p.qkv is not None:
            return p.qkv(normed).split((self.q_size, self.kv_size, self.kv_size), dim=-1)
        return p.attn.q_proj(normed), p.attn.k_proj(normed), p.attn.v_proj(normed)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H*D) -> (B, H, T, D)"""
        return x.view(*x.shape[:-1], -1, self.head_dim).transpose(1, 2)

    def run(self, index: int, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache) -> torch.Tensor:
        """One decoder layer on (B, T, d) states whose rotary tables are cos/sin (B, T, D), appending to `cache`."""
        p = self.layers[index]
        batch, steps, _ = hidden.shape
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
        q, k, v = self._qkv(p, _rms_norm(hidden, p.input_norm, p.eps))
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(k, v, index)
        past = k.shape[2] - steps
        mask = None
        if steps > 1 and past > 0:  # a prompt after a cached prefix: causal, offset by the prefix
            mask = torch.ones(steps, k.shape[2], dtype=torch.bool, device=q.device).tril(past)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling,
                                                  is_causal=steps > 1 and past == 0, enable_gqa=True)
        hidden = hidden + p.attn.o_proj(attended.transpose(1, 2).reshape(batch, steps, -1))
        normed = _rms_norm(hidden, p.post_norm, p.eps)
        if p.gate_up is not None:
            gate, up = p.gate_up(normed).chunk(2, dim=-1)
        else:
            gate, up = p.mlp.gate_proj(normed), p.mlp.up_proj(normed)
        return hidden + p.mlp.down_proj(p.mlp.act_fn(gate) * up)

    def kv(self, index: int, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """The keys (with rotary) and values layer `index` caches for input states `hidden`."""
        p = self.layers[index]
        normed = _rms_norm(hidden, p.input_norm, p.eps)
        if p.kv is not None:
            k, v = p.kv(normed).split((self.kv_size, self.kv_size), dim=-1)
        else:
            k, v = p.attn.k_proj(normed), p.attn.v_proj(normed)
        k, v = self._heads(k), self._heads(v)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        return k * cos + _rotate_half(k) * sin, v
