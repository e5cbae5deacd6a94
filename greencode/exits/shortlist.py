"""Shortlist exit heads: at an exit point, decode over only the K most frequent code tokens.

The tied LM head of the default model (49,152 x 576) costs as much as 8 of its 30 layers; an exit that
pays all of it gains little. Decoding an exit through the final norm and only the shortlist's rows of
the shared head cuts that to K x d (8,192 rows: ~1.3 layer-units). Full depth always uses the whole head,
so the base model's output is unchanged.

The shortlist is a 1-D int64 tensor of token ids, most frequent first (so its first K are the K most
frequent). File format (`greencode-shortlist/1`, safetensors): tensor "ids", metadata {format,
vocab_size, tokenizer (sha256 of the tokenizer's vocabulary), source}.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from greencode.files.atomic import atomic_write
from greencode.errors import GreencodeError

FORMAT = "greencode-shortlist/1"


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the vocabulary (token -> id), so a shortlist is never read through another tokenizer."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()


def most_frequent(counts: torch.Tensor, k: int) -> torch.Tensor:
    """The ids of the `k` largest counts (tokens never seen are left out), most frequent first; ties by id."""
    counts = torch.as_tensor(counts).flatten().to(torch.float64)
    order = torch.argsort(-counts, stable=True)  # stable: equal counts keep ascending id order
    seen = order[counts[order] > 0]
    return seen[:k].to(torch.int64)


def check_shortlist(ids: torch.Tensor, vocab_size: int, where: str) -> torch.Tensor:
    """Refuse an empty shortlist, ids outside the vocabulary and repeated ids, with one line naming `where`."""
    ids = torch.as_tensor(ids)
    if ids.ndim != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise GreencodeError(f"{where}: a shortlist is a 1-D tensor of token ids, got {tuple(ids.shape)} "
                             f"{ids.dtype}; rebuild it with `greencode train default`")
    if ids.numel() == 0:
        raise GreencodeError(f"{where}: the shortlist is empty; rebuild it with `greencode train default` "
                             "or set [exits].shortlist = 0 (the whole vocabulary)")
    outside = ids[(ids < 0) | (ids >= vocab_size)]
    if outside.numel():
        raise GreencodeError(f"{where}: {outside.numel()} shortlist ids lie outside the vocabulary of "
                             f"{vocab_size} tokens (e.g. {int(outside[0])}); it was built for another "
                             "tokenizer: rebuild it with `greencode train default`")
    if torch.unique(ids).numel() != ids.numel():
        raise GreencodeError(f"{where}: the shortlist repeats token ids; rebuild it with `greencode train default`")
    return ids.to(torch.int64)


def save_shortlist(path: str | Path, ids: torch.Tensor, tokenizer, source: str = "") -> Path:
    """Write the shortlist atomically (checked first: nothing half-valid is ever written)."""
    from safetensors.torch import save_file

    path = Path(path)
    ids = check_shortlist(ids, len(tokenizer), str(path)).detach().to("cpu").contiguous()
    metadata = {"format": FORMAT, "vocab_size": str(len(tokenizer)), "tokenizer": tokenizer_fingerprint(tokenizer),
                "source": source}
    return atomic_write(path, lambda temporary: save_file({"ids": ids}, str(temporary), metadata=metadata))


def load_shortlist(path: str | Path, tokenizer) -> torch.Tensor:
    """The shortlist in `path`, checked against `tokenizer`; any problem is one GreencodeError naming the file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if "ids" not in handle.keys():
                raise GreencodeError(f"{path}: not a greencode shortlist (no 'ids' tensor); "
                                     "rebuild it with `greencode train default`")
            ids = handle.get_tensor("ids")
    except (SafetensorError, OSError) as exc:
        raise GreencodeError(f"{path}: unreadable shortlist ({exc}); rebuild it with `greencode train default`") from None
    if metadata.get("format") != FORMAT:
        raise GreencodeError(f"{path}: not a greencode shortlist (format {metadata.get('format')!r}, "
                             f"expected {FORMAT!r})")
    if metadata.get("tokenizer") != tokenizer_fingerprint(tokenizer) or metadata.get("vocab_size") != str(len(tokenizer)):
        raise GreencodeError(f"{path}: the shortlist belongs to another tokenizer (vocabulary of "
                             f"{metadata.get('vocab_size')} tokens, this model's has {len(tokenizer)} or differs); "
                             "rebuild it for this model with `greencode train default`")
    return check_shortlist(ids, len(tokenizer), str(path))


class ShortlistHead:
    """The LM head restricted to a shortlist: its rows gathered once into a contiguous (K, d) weight.

    Called on a final-normed state, it returns K logits; `token(index)` maps an index back to the token id.
    """

    def __init__(self, lm_head: torch.nn.Module, ids: torch.Tensor, vocab_size: int):
        weight = lm_head.weight.detach()
        ids = check_shortlist(ids, weight.shape[0], "the shortlist").to(weight.device)
        self.vocab_size = vocab_size
        self.ids = ids
        self.token_ids: list[int] = ids.tolist()  # index -> token id without a tensor lookup per token
        self.weight = weight.index_select(0, ids).contiguous()  # (K, d)
        bias = getattr(lm_head, "bias", None)
        self.bias = bias.detach().index_select(0, ids).contiguous() if bias is not None else None
        self._fast = None  # the rows in the head's fast form (greencode.model.weights), when it has one
        if getattr(lm_head, "form", "fp32") != "fp32":
            from greencode.model.weights import QuantizedLinear

            self._fast = QuantizedLinear(self.weight, self.bias, lm_head.form, getattr(lm_head, "smoothing", None))

    @property
    def size(self) -> int:
        return len(self.token_ids)

    def __call__(self, normed: torch.Tensor) -> torch.Tensor:
        if self._fast is not None:
            return self._fast(normed)  # (..., K)
        return torch.nn.functional.linear(normed, self.weight, self.bias)  # (..., K)

    def token(self, index: int) -> int:
        return self.token_ids[index]


def describe_exit_head(shortlist_size: int | None, vocab_size: int, units: float) -> str:
    """One line for `greencode info` and the TUI panel, e.g. 'exit head: 8192 of 49152 tokens, 1.3 layer-units'."""
    if shortlist_size is None:
        return f"exit head: all {vocab_size} tokens, {units:.1f} layer-units"
    return f"exit head: {shortlist_size} of {vocab_size} tokens, {units:.1f} layer-units"
