"""Oracle marks for the compare view (F4): under each full-depth token, the first exit point whose top-1
equals it (greencode.exits.oracle), and what an oracle that stopped there would have cost (modelled joules)."""

from __future__ import annotations

from rich.text import Text

from greencode.exits.oracle import first_agreeing_exit
from tui.inspector import token_label


def oracle_layers(traced_events, exit_points: list[int], num_layers: int) -> list[int]:
    """Per token of a full-depth `record=True` run: its oracle exit layer."""
    return [first_agreeing_exit(e.trace.exit_top1, e.trace.final_top1, exit_points, num_layers) for e in traced_events]


def modelled_joules(full_events, layers: list[int], cost) -> float:
    """The full-depth tokens' joules, each scaled to what stopping at its oracle layer would cost."""
    return sum(e.full_depth_joules * (cost.full_units if layer == cost.num_layers else cost.units(layer, 1))
               / cost.full_units for e, layer in zip(full_events, layers))


def marks_text(texts: list[str], layers: list[int], num_layers: int, width: int) -> Text:
    """Tokens on one line and their oracle layers under them, wrapped to `width` columns."""
    text = Text()
    top, bottom, used = Text(), Text(), 0
    for piece, layer in zip(texts, layers):
        label = token_label(piece)
        mark = "L" if layer == num_layers else str(layer)
        cell = max(len(label), len(mark)) + 1
        if used and used + cell > width:
            text.append_text(top + Text("\n") + bottom + Text("\n"))
            top, bottom, used = Text(), Text(), 0
        top.append(f"{label:<{cell}}")
        bottom.append(f"{mark:<{cell}}", style="bold" if layer < num_layers else "dim")
        used += cell
    text.append_text(top + Text("\n") + bottom)
    return text
