"""Prefix reuse between prompts: the KV cache of the last few prompts, so a prompt that extends one of
them (an editor sending the same file again as the user types) prefills only its new tokens.

Only full-depth prefill state is ever stored (never a decoded token's, which may come from an early
exit and state propagation), and it is copy-on-write: `store` keeps its own copy of the keys and values,
and `lookup` hands out a fresh cache holding a copy of the common prefix, so nothing a request does to
its cache can reach an entry another request reuses. Entries are keyed by model, so state never leaks
between models, and bounded by count and bytes (least recently used goes first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _layer_tensors(cache) -> list[tuple]:
    """(keys, values) per layer of a transformers DynamicCache; keys are (B, heads, T, head_dim)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


WINDOW_STEP = 64  # tokens: how far a long prompt's window start jumps at a time


def window_cut(length: int, limit: int) -> int:
    """How many leading tokens to drop so at most `limit` remain, on a grid of WINDOW_STEP tokens.

    Keeping exactly the last `limit` tokens would move the window's start with every keystroke, and no
    cached prefix would ever match; on the grid the start stays put for WINDOW_STEP tokens of typing,
    at the price of up to WINDOW_STEP - 1 fewer context tokens."""
    if length <= limit:
        return 0
    step = max(1, min(WINDOW_STEP, limit // 4))
    return -(-(length - limit) // step) * step


@dataclass
class _Entry:
    ids: tuple[int, ...]
    layers: list[tuple]  # (keys, values) per layer: this entry's own tensors, never handed out
    nbytes: int


class PrefixCache:
    def __init__(self, max_entries: int = 4, max_bytes: int = 256 * 2**20):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()  # (model key, ids) -> entry; LRU order
        self._lock = threading.Lock()  # the TUI and a server may prefill from different threads
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, model_key, ids: list[int], new_cache):
        """The longest stored prefix of `ids` for this model, copied into `new_cache` (a fresh empty cache).

        Returns how many tokens it holds: at most len(ids) - 1, so the caller always runs at least the
        last token and gets its logits (0 when nothing matches)."""
        best, best_len = None, 0
        with self._lock:
            for key, entry in self._entries.items():
                if key[0] != model_key:
                    continue
                length = min(common_prefix_length(entry.ids, ids), len(ids) - 1)
                if length > best_len:
                    best, best_len = key, length
            if best is None:
                self.misses += 1
                return 0
            self._entries.move_to_end(best)
            self.hits += 1
            layers = self._entries[best].layers
        for index, (keys, values) in enumerate(layers):
            # update() concatenates onto an empty tensor: the new cache owns a copy of the prefix
            new_cache.update(keys[..., :best_len, :], values[..., :best_len, :], index)
        return best_len

    def store(self, model_key, ids: list[int], cache) -> None:
        """Keep a copy of a prompt's full-depth cache (call before anything decodes into it)."""
        if not self.enabled:
            return
        layers = [(keys.clone(), values.clone()) for keys, values in _layer_tensors(cache)]
        nbytes = sum(k.nbytes + v.nbytes for k, v in layers)
        if nbytes > self.max_bytes:
            return
        key = (model_key, tuple(ids))
        with self._lock:
            # a stored prompt that is a prefix of this one is now redundant: this entry serves it too
            for old in [k for k, e in self._entries.items()
                        if k[0] == model_key and len(e.ids) <= len(ids) and key[1][:len(e.ids)] == e.ids]:
                del self._entries[old]
            self._entries[key] = _Entry(key[1], layers, nbytes)
            while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def prefix_cache_for(engine_config) -> PrefixCache | None:
    """The cache [engine].prefix_cache and prefix_cache_mb ask for (None when either is 0)."""
    if engine_config.prefix_cache <= 0 or engine_config.prefix_cache_mb <= 0:
        return None
    return PrefixCache(engine_config.prefix_cache, engine_config.prefix_cache_mb * 2**20)
