"""Uniform access to the parts of a decoder-only LM that early exit needs.

An adapter exposes, for layers numbered 1..L (index i = layer - 1):
embeddings, each decoder layer, the final norm, the LM head, and `kv(i, h)`: the keys and values
layer i would cache for input state h (its input norm + K/V projections, with rotary for Llama).
The engine uses `kv` to fill the cache of layers a token skipped (state propagation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from greencode.errors import GreencodeError
from greencode.model.weights import module_bytes


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, T, H*D) -> (B, H, T, D)"""
    return x.view(*x.shape[:-1], -1, head_dim).transpose(1, 2)


def _hidden(out):
    """Decoder layers return a tensor in transformers 5, a tuple in some classes."""
    return out[0] if isinstance(out, tuple) else out


@dataclass
class ArchAdapter:
    """Base class: subclasses fill in the architecture-specific parts."""

    model: nn.Module
    arch: str = ""
    exit_maps: nn.Module | None = None  # greencode.exits.maps.ExitMaps, when the model ships them
    lean: object | None = None  # greencode.model.lean.LeanLlama: plain Llama layers run without transformers' plumbing

    @property
    def config(self):
        return self.model.config

    @property
    def layers(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def layer_context(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> dict:
        """Per-step inputs shared by every layer (rotary tables for Llama)."""
        return {"position_ids": position_ids}

    def run_layer(self, index: int, hidden: torch.Tensor, context: dict, cache) -> torch.Tensor:
        # context may carry an attention mask (a prompt run on top of a reused prefix); else none is needed
        return _hidden(self.layers[index](hidden, cache=cache, use_cache=cache is not None,
                                          **{"attention_mask": None, **context}))

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.get_output_embeddings()(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Decode any layer's hidden state the way the final layer is decoded: norm, then the shared head."""
        return self.lm_head(self.final_norm(hidden))

    def exit_logits(self, layer: int, hidden: torch.Tensor, head=None) -> torch.Tensor:
        """Decode a token that leaves at `layer` (1..L): through its exit map, if any, then norm and head;
        `head` (a greencode.exits.shortlist.ShortlistHead) gives logits over its shortlist only."""
        if self.exit_maps is not None and layer in self.exit_maps.exit_points:
            hidden = self.exit_maps(layer, hidden)
        if head is not None:
            return head(self.final_norm(hidden))
        return self.logits(hidden)

    def kv(self, index: int, hidden: torch.Tensor, context: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def head_bytes(self) -> int:
        """Bytes of weights one LM-head pass reads (in the form the weights run in)."""
        return module_bytes(self.model.get_output_embeddings())

    @property
    def layer_bytes(self) -> int:
        """Bytes of weights one pass through a decoder layer reads."""
        return module_bytes(self.layers[0])

    @property
    def kv_bytes(self) -> int:
        """Bytes of weights state propagation reads for one skipped layer: its K and V projections."""
        layer = self.layers[0]
        if self.arch == "gpt2":
            return module_bytes(layer.attn.c_attn) * 2 // 3  # c_attn holds Q, K and V
        return module_bytes(layer.self_attn.k_proj) + module_bytes(layer.self_attn.v_proj)

    @property
    def vocab_size(self) -> int:
        """Rows of the LM head."""
        return self.model.get_output_embeddings().weight.shape[0]


class LlamaAdapter(ArchAdapter):
    """Llama, Mistral, Qwen2 and SmolLM: RMSNorm, rotary positions, grouped K/V heads."""

    @property
    def layers(self):
        return self.model.model.layers

    def embed(self, input_ids, position_ids):
        return self.model.model.embed_tokens(input_ids)

    def layer_context(self, hidden, position_ids):
        cos, sin = self.model.model.rotary_emb(hidden, position_ids=position_ids)
        return {"position_ids": position_ids, "position_embeddings": (cos, sin)}

    def final_norm(self, hidden):
        return self.model.model.norm(hidden)

    def run_layer(self, index, hidden, context, cache):
        if self.lean is None:
            return super().run_layer(index, hidden, context, cache)
        return self.lean.run(index, hidden, *context["position_embeddings"], cache)

    def kv(self, index, hidden, context):
        if self.lean is not None:
            return self.lean.kv(index, hidden, *context["position_embeddings"])
        layer = self.layers[index]
        attn = layer.self_attn
        normed = layer.input_layernorm(hidden)
        keys = _heads(attn.k_proj(normed), attn.head_dim)
        values = _heads(attn.v_proj(normed), attn.head_dim)
        cos, sin = context["position_embeddings"]
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
        return keys * cos + _rotate_half(keys) * sin, values


class OPTAdapter(ArchAdapter):
    """OPT: learned positions added at the embedding, LayerNorm before attention (most sizes)."""

    @property
    def _decoder(self):
        return self.model.model.decoder

    @property
    def layers(self):
        return self._decoder.layers

    def embed(self, input_ids, position_ids):
        embeds = self._decoder.embed_tokens(input_ids)
        if self._decoder.project_in is not None:
            embeds = self._decoder.project_in(embeds)
        return embeds + self._decoder.embed_positions(None, 0, position_ids=position_ids)

    def final_norm(self, hidden):
        if self._decoder.final_layer_norm is not None:
            hidden = self._decoder.final_layer_norm(hidden)
        if self._decoder.project_out is not None:
            hidden = self._decoder.project_out(hidden)
        return hidden

    def kv(self, index, hidden, context):
        layer = self.layers[index]
        attn = layer.self_attn
        normed = layer.self_attn_layer_norm(hidden) if layer.do_layer_norm_before else hidden
        return _heads(attn.k_proj(normed), attn.head_dim), _heads(attn.v_proj(normed), attn.head_dim)


class GPT2Adapter(ArchAdapter):
    """GPT-2: learned positions, fused QKV projection (Conv1D)."""

    @property
    def layers(self):
        return self.model.transformer.h

    def embed(self, input_ids, position_ids):
        return self.model.transformer.wte(input_ids) + self.model.transformer.wpe(position_ids)

    def layer_context(self, hidden, position_ids):
        return {}

    def final_norm(self, hidden):
        return self.model.transformer.ln_f(hidden)

    def kv(self, index, hidden, context):
        attn = self.layers[index].attn
        _, keys, values = attn.c_attn(self.layers[index].ln_1(hidden)).split(attn.split_size, dim=2)
        return _heads(keys, attn.head_dim), _heads(values, attn.head_dim)


ADAPTERS: dict[str, type[ArchAdapter]] = {
    "llama": LlamaAdapter,
    "mistral": LlamaAdapter,
    "qwen2": LlamaAdapter,
    "smollm": LlamaAdapter,
    "opt": OPTAdapter,
    "gpt2": GPT2Adapter,
}


def adapter_for(model: nn.Module) -> ArchAdapter:
    arch = getattr(model.config, "model_type", type(model).__name__)
    if arch not in ADAPTERS:
        raise GreencodeError(f"unsupported architecture {arch}; supported: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[arch](model=model, arch=arch)
