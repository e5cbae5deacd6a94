"""Messages, named in the past tense: workers and widgets post them, the app reacts."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from textual.message import Message

from greencode.decoding.events import CompletionSummary, TokenEvent


def while_running(handler):
    """For handlers of worker messages: they can still arrive while the app shuts down; drop them then."""

    @functools.wraps(handler)
    def guarded(self, message):
        if self.is_running:
            handler(self, message)

    return guarded


@dataclass
class ModelLoaded(Message):
    engine: Any  # an EarlyExitEngine, or anything with its API (tests inject a fake)
    description: str  # name, depth and exit points, for the panel


@dataclass
class ModelLoadFailed(Message):
    error: str


@dataclass
class TokenGenerated(Message):
    run_id: int  # which completion it belongs to: tokens of a cancelled run are ignored
    event: TokenEvent


@dataclass
class CompletionFinished(Message):
    run_id: int
    summary: CompletionSummary


@dataclass
class CompletionFailed(Message):
    run_id: int
    error: str


@dataclass
class CompareTokenGenerated(Message):
    run_id: int
    side: str  # "early" | "full"
    event: TokenEvent


@dataclass
class CompareSideFinished(Message):
    run_id: int
    side: str
    summary: CompletionSummary


@dataclass
class GhostAccepted(Message):
    text: str  # what Tab inserted


@dataclass
class GhostDismissed(Message):
    pass


@dataclass
class GhostPartRequested(Message):
    unit: str  # "word" (ctrl+right) or "line" (ctrl+l): accept that much of the ghost


@dataclass
class GhostClicked(Message):
    piece: int  # which drawn token of the ghost was clicked (pieces with text, in order)


@dataclass
class ThresholdRequested(Message):
    """The knob was clicked or scrolled; the app applies it (steps are relative, so fast clicks add up)."""

    value: float | None = None  # an absolute threshold (a click on the bar)
    steps: int = 0  # or this many knob steps up (+) or down (-)


@dataclass
class SweepRowDone(Message):
    run_id: int
    row: Any  # greencode.decoding.sweep.SweepRow


@dataclass
class SweepFinished(Message):
    run_id: int
    error: str = ""


@dataclass
class OracleMarked(Message):
    run_id: int
    texts: list  # the full-depth tokens' texts
    layers: list  # each one's oracle exit layer (L: no exit point agrees)
    joules: float  # modelled: every token stopped at its oracle exit
