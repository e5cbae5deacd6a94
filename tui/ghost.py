"""The streamed completion as display pieces: (text, exit layer) per token, trimmed to what Tab inserts."""

from __future__ import annotations

import re
from collections.abc import Iterable

from greencode.decoding.events import TokenEvent, eol_cut

NEWLINE_MARK = "\u21b5"  # ↵ : a completion's line break, drawn inline at the cursor


def ghost_pieces(events: Iterable[TokenEvent], final_text: str | None = None, stop_at_eol: bool = False,
                 stop_rule=None) -> list[tuple[str, int]]:
    """Token texts with their exit layers, cut at final_text's length (or, while streaming, at line end, or
    where `stop_rule` (greencode.decoding.fim.SuffixStop) says a later cut may reach)."""
    pieces = [(event.text, event.exit_layer) for event in events if event.text]
    joined = "".join(text for text, _ in pieces)
    if final_text is not None:
        limit = len(final_text)
    elif stop_at_eol:
        limit = eol_cut(joined)
    else:
        limit = stop_rule.visible(joined) if stop_rule is not None else None
    if limit is None:
        return pieces
    kept, used = [], 0
    for text, layer in pieces:
        if used >= limit:
            break
        kept.append((text[: limit - used], layer))
        used += len(kept[-1][0])
    return [(text, layer) for text, layer in kept if text]


def inline_text(text: str, indent_width: int = 4) -> str:
    """One line to draw at the cursor: line breaks as ↵, tabs as spaces."""
    return text.replace("\r\n", "\n").replace("\n", NEWLINE_MARK).replace("\t", " " * indent_width)


def next_word(text: str) -> str:
    """What ctrl+right accepts: leading blanks, then one word or one run of punctuation."""
    match = re.match(r"\s*(\w+|[^\w\s]+)", text)
    return match.group(0) if match else text


def next_line(text: str) -> str:
    """What ctrl+l accepts: up to and including the first line break after some content (else all)."""
    body = text.lstrip("\r\n")
    end = body.find("\n")
    return text if end < 0 else text[: len(text) - len(body) + end + 1]


def drop_chars(pieces: list[tuple[str, int]], count: int) -> list[tuple[str, int]]:
    """The pieces without their first `count` characters (the part already accepted)."""
    kept = []
    for text, layer in pieces:
        if count >= len(text):
            count -= len(text)
            continue
        kept.append((text[count:], layer))
        count = 0
    return kept
