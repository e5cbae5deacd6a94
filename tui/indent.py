"""Indentation while typing code (UI-free): what Enter inserts, and how far a closing brace dedents."""

from __future__ import annotations

import re

OPENERS = {"python": (":",), "java": ("{",)}  # a line ending in one of these opens a block
ANY_OPENERS = (":", "{", "(", "[")  # for other text: brackets left open
BLOCK_ENDERS = re.compile(r"(return|pass|raise|break|continue)\b")  # Python: nothing after them in the block


def leading_whitespace(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _brackets_open(code: str) -> bool:
    return sum(code.count(c) for c in "([{") > sum(code.count(c) for c in ")]}")


def newline_text(line_before_cursor: str, language: str | None, indent_width: int = 4) -> str:
    """Enter: a newline, the line's own indentation, one level more after a block opener, one level less after
    a Python statement that ends its block (return, pass, raise, break, continue)."""
    indent = leading_whitespace(line_before_cursor)
    code = line_before_cursor.rstrip()
    if language == "python" and "#" in code and "'" not in code and '"' not in code:
        code = code.split("#", 1)[0].rstrip()  # `x = 1  # note:` opens nothing
    openers = OPENERS.get(language or "", ANY_OPENERS)
    if code and code.endswith(openers):
        indent += "\t" if indent.startswith("\t") else " " * indent_width
    elif language == "python" and BLOCK_ENDERS.match(code.strip()) and not _brackets_open(code):
        indent = indent[:-1] if indent.endswith("\t") else indent[:max(0, len(indent) - indent_width)]
    return "\n" + indent


def closing_dedent(line_before_cursor: str, indent_width: int = 4) -> int:
    """Characters to remove before a `}` typed on a line that holds only indentation: back to the previous stop."""
    if not line_before_cursor or line_before_cursor.strip():
        return 0
    if line_before_cursor.endswith("\t"):
        return 1
    return (len(line_before_cursor) - 1) % indent_width + 1
