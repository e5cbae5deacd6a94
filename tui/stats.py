"""Running figures for the side panel, folded from TokenEvents as they arrive (UI-free).

Everything comes from the events themselves (their seconds and joules), so the panel shows what the
engine measured, not what the UI's clock saw. The arithmetic is greencode.decoding.events.Figures'.
"""

from __future__ import annotations

from dataclasses import dataclass

from greencode.decoding.events import Figures

CompletionStats = Figures  # one completion, token by token


@dataclass
class SessionStats(Figures):
    """Every token of the session, with the number of completions finished."""

    num_layers: int = 0
    completions: int = 0
