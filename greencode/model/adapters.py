"""Uniform access to the parts of a decoder-only LM that early exit needs.

An adapter exposes, for layers numbered 1..L (index i = layer - 1):
embeddings, each decoder layer, the final norm, the LM head, and `kv(i, h)`: the keys and values
layer i would cache for input state h (its input norm + K/V projections, with rotary for Llama).
The engine fills the cache of the layers a token skipped (state propagation) with `propagation(...)`:
`kv` layer by layer, or for lean Llama models every skipped layer in one op sequence (lean.StackedKV).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    _positions: dict = field(default_factory=dict, repr=False)  # per-position step contexts, computed in one call

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

    def step_context(self, hidden: torch.Tensor, position: int) -> dict:
        """layer_context of one decode step at `position` (hidden: its (1, 1, d) state)."""
        return self.layer_context(hidden, torch.tensor([[position]], device=hidden.device))

    def propagation(self, exit_points: list[int]):
        """The state propagation of an engine with these exit points: a function (start, hidden, context,
        cache) that appends the K/V of layers start..L-1 for `hidden` to `cache`."""
        def layer_by_layer(start: int, hidden: torch.Tensor, context: dict, cache) -> None:
            for skipped in range(start, self.num_layers):
                cache.update(*self.kv(skipped, hidden, context), skipped)
        return layer_by_layer

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
        context = {"position_ids": position_ids, "position_embeddings": (cos, sin)}
        if self.lean is not None:
            from greencode.model.lean import rotary_tables

            context["rotary"] = rotary_tables(cos, sin)
        return context

    def step_context(self, hidden, position):
        """A slice of one table of every position's rotary values up to a power of two past `position`,
        computed in one call (the same values, bit for bit: each is one product, then cos/sin)."""
        rotary = self.model.model.rotary_emb
        if "dynamic" in str(getattr(rotary, "rope_type", "default")):  # its frequencies follow the length
            return super().step_context(hidden, position)
        table = self._positions.get("table")
        if table is None or position >= table["position_ids"].shape[1]:
            size = 1 << max(9, position.bit_length())
            positions = torch.arange(size, device=hidden.device)[None]
            table = self._positions["table"] = self.layer_context(hidden, positions)
        at = slice(position, position + 1)
        cos, sin = table["position_embeddings"]
        context = {"position_ids": table["position_ids"][:, at], "position_embeddings": (cos[:, at], sin[:, at])}
        if "rotary" in table:
            context["rotary"] = tuple(t[:, at] for t in table["rotary"])
        return context

    def propagation(self, exit_points):
        if self.lean is None or not self.lean.same_eps:
            return super().propagation(exit_points)
        from greencode.model.lean import StackedKV

        stacked = StackedKV(self.lean, exit_points)
        return lambda start, hidden, context, cache: stacked(start, hidden, context["rotary"], cache)

    def final_norm(self, hidden):
        if self.lean is not None:  # torch's fused RMSNorm: LlamaRMSNorm's result, bit for bit, in one op
            norm = self.model.model.norm
            return torch.nn.functional.rms_norm(hidden, norm.weight.shape, norm.weight, norm.variance_epsilon)
        return self.model.model.norm(hidden)

    def run_layer(self, index, hidden, context, cache):
        if self.lean is None:
            return super().run_layer(index, hidden, context, cache)
        return self.lean.run(index, hidden, context["rotary"], cache)

    def kv(self, index, hidden, context):
        if self.lean is not None:
            return self.lean.kv(index, hidden, context["rotary"])
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
