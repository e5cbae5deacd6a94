"""A preallocated KV cache: each token's keys and values are written in place, never concatenated.

transformers' DynamicCache appends with torch.cat, copying a layer's whole cache on every token (15% of a
decode token's time on the default model at ~500 tokens of context). This cache reserves room for the
prompt and the tokens to come, for every layer in one buffer (layers, B, heads, capacity, head_dim), so the
keys and values of a run of layers (state propagation of the layers a token skipped) are written in one
copy (`update_range`). It grows (doubling) only if a caller writes past that. It speaks the part of the
Cache API the decoder layers and the engine use: `update`, `get_seq_length`, and `layers[i].keys / .values`
(the filled part).
"""

from __future__ import annotations

import torch


class _Layer:
    """One layer's view of the cache's buffers."""

    def __init__(self, cache: "StaticKVCache", index: int):
        self.cache, self.index = cache, index
        self.length = 0

    @property
    def keys(self) -> torch.Tensor:
        return self.cache.buffer_keys[self.index, :, :, :self.length]

    @property
    def values(self) -> torch.Tensor:
        return self.cache.buffer_values[self.index, :, :, :self.length]


class StaticKVCache:
    def __init__(self, num_layers: int, capacity: int):
        self.layers = [_Layer(self, index) for index in range(num_layers)]
        self.capacity = max(1, capacity)
        self.buffer_keys: torch.Tensor | None = None  # (layers, B, heads, capacity, head_dim)
        self.buffer_values: torch.Tensor | None = None

    def _reserve(self, keys: torch.Tensor, values: torch.Tensor, needed: int) -> None:
        """Room for `needed` positions in every layer (keys and values shaped (B, heads, T, head_dim))."""
        grown = self.buffer_keys is not None
        capacity = max(needed, 2 * self.buffer_keys.shape[3]) if grown else max(self.capacity, needed)
        count = len(self.layers)
        new_keys = keys.new_empty(count, *keys.shape[:2], capacity, keys.shape[3])
        new_values = values.new_empty(count, *values.shape[:2], capacity, values.shape[3])
        if grown:
            old = self.buffer_keys.shape[3]
            new_keys[:, :, :, :old] = self.buffer_keys
            new_values[:, :, :, :old] = self.buffer_values
        self.buffer_keys, self.buffer_values = new_keys, new_values

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Append (B, heads, T, head_dim) keys and values to layer `layer_idx`; return all of that layer's."""
        layer = self.layers[layer_idx]
        end = layer.length + keys.shape[2]
        if self.buffer_keys is None or end > self.buffer_keys.shape[3]:
            self._reserve(keys, values, end)
        self.buffer_keys[layer_idx, :, :, layer.length:end] = keys
        self.buffer_values[layer_idx, :, :, layer.length:end] = values
        layer.length = end
        return layer.keys, layer.values

    def update_range(self, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append (n, B, heads, 1, head_dim) keys and values to layers start..start+n-1, which all hold the
        same number of positions (the layers one token skipped), in one copy each."""
        count, length = keys.shape[0], self.layers[start].length
        end = length + keys.shape[3]
        if self.buffer_keys is None or end > self.buffer_keys.shape[3]:
            self._reserve(keys[0], values[0], end)
        self.buffer_keys[start:start + count, :, :, length:end] = keys
        self.buffer_values[start:start + count, :, :, length:end] = values
        for layer in self.layers[start:start + count]:
            layer.length = end

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[layer_idx].length
