"""How much of a file or prompt is read and tokenized: the window around the cursor, in characters, cut
before any tokenizer sees the text. `greencode complete`, the TUI and `greencode serve` all cut here, so a
45 MB file costs what its last MAX_CONTEXT_CHARS do (the engine then keeps the tokens nearest the cursor,
[engine].max_context_tokens of them).
"""

from __future__ import annotations

MAX_CONTEXT_CHARS = 16_000  # before the cursor: several times what max_context_tokens (512) holds in code
MAX_SUFFIX_CHARS = MAX_CONTEXT_CHARS // 4  # after the cursor: FIM keeps at most a quarter of its room for it


def text_window(text: str, max_chars: int = MAX_CONTEXT_CHARS) -> str:
    """At most the last `max_chars` of `text`, cut on a grid of max_chars / 8 and then at the next line start:
    while the user types, the window's start (and so the prompt's first tokens, which a cached prefix must
    match) stays put for an eighth of the window."""
    if len(text) <= max_chars:
        return text
    step = max(1, max_chars // 8)
    cut = -(-(len(text) - max_chars) // step) * step
    line_start = text.find("\n", cut) + 1
    return text[line_start:] if 0 < line_start < len(text) else text[cut:]


def suffix_window(text: str, max_chars: int = MAX_SUFFIX_CHARS) -> str:
    """At most the first `max_chars` of the text after the cursor, ended at a line end where there is one."""
    if len(text) <= max_chars:
        return text
    line_end = text.rfind("\n", 0, max_chars)
    return text[:line_end] if line_end > 0 else text[:max_chars]


def cursor_window(before: str, after: str = "", max_chars: int = MAX_CONTEXT_CHARS) -> tuple[str, str]:
    """The text before and after the cursor that a completion reads."""
    return text_window(before, max_chars), suffix_window(after, max(1, max_chars * MAX_SUFFIX_CHARS // MAX_CONTEXT_CHARS))
