"""Token healing: completing from a cursor that sits inside a token.

A prompt cut mid-word (`... in) thr`) ends in a token the model rarely saw end a word there (` thr`),
so it continues that odd token (`ice throws`). Healing backs the prompt up to the start of its last
token, constrains the first generated token(s) to start with the removed text (` throws` starts with
` thr`), and hands the caller only what comes after the cursor (`ows`).

A generated token may also be a proper prefix of the removed text (` th` for ` thr`): the rest then
constrains the next token, so the removed text can come back as several tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HEAL_TOKENS = 1  # prompt tokens backed up: the last one holds the word the cursor is in


@dataclass(frozen=True)
class HealedPrompt:
    ids: list[int]  # the prompt without its last token(s)
    removed: str  # their text: the completion must start with it, and the caller never sees it


def heal_prompt(tokenizer, ids: list[int], vocab_texts: list[str]) -> HealedPrompt:
    """Back `ids` up by HEAL_TOKENS tokens when what they decode to can be rebuilt by the vocabulary."""
    if len(ids) <= HEAL_TOKENS:  # keep at least one token to run the prompt on
        return HealedPrompt(list(ids), "")
    removed = "".join(vocab_texts[i] if i < len(vocab_texts) else "" for i in ids[-HEAL_TOKENS:])
    whole = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
    if not removed or "\ufffd" in removed or not whole.endswith(removed):
        return HealedPrompt(list(ids), "")  # a piece of a multi-byte character, or a special token
    return HealedPrompt(list(ids[:-HEAL_TOKENS]), removed)


def vocab_texts(tokenizer) -> list[str]:
    """The text of every token id on its own (special tokens as empty strings, so they never match)."""
    special = set(tokenizer.all_special_ids)
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], clean_up_tokenization_spaces=False)
    return ["" if i in special else text for i, text in enumerate(texts)]


class HealingConstraint:
    """What the next generated token must agree with: the removed text not yet given back."""

    def __init__(self, removed: str, texts: list[str]):
        self.remaining = removed
        self._texts = texts

    def __bool__(self) -> bool:
        return bool(self.remaining)

    def allowed(self, size: int) -> torch.Tensor:
        """(size,) bool: tokens that start with the remaining text, or are a non-empty prefix of it."""
        rest = self.remaining
        ids = [i for i, text in enumerate(self._texts[:size]) if text and (text.startswith(rest) or rest.startswith(text))]
        mask = torch.zeros(size, dtype=torch.bool)
        mask[ids] = True
        return mask

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits with every disagreeing token at -inf (unchanged when nothing is left to heal)."""
        if not self.remaining:
            return logits
        mask = self.allowed(logits.shape[-1]).to(logits.device)
        return logits.masked_fill(~mask, float("-inf"))

    def advance(self, token_id: int) -> None:
        """The token chosen: consume the part of the removed text it gave back."""
        text = self._texts[token_id] if token_id < len(self._texts) else ""
        self.remaining = self.remaining[len(text):] if self.remaining.startswith(text) and text else ""
