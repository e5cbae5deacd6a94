"""The token inspector (F6, or a click on a ghost token): why each token left where it did.

For the selected token: where it exited, the policy's score at every exit point it passed (recorded by the
engine while streaming), and the top-3 candidates at every exit point with full depth's top-1 and the
oracle exit (computed on demand for that one token, in a worker: see greencode/decoding/explain.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, Static
from textual.worker import get_current_worker

from greencode.errors import GreencodeError
from greencode.decoding.events import TokenEvent
from tui.ghost import inline_text
from tui.panel import Banded

SETTLE_SECONDS = 0.15  # the selection must rest this long before its replay starts

# What each policy's recorded score means (TokenEvent.exit_scores), by the policy's kind.
SCORE_LABELS = {"agent": "P(exit)", "confidence": "max p", "entropy": "entropy"}


def score_label(policy: str) -> str:
    return SCORE_LABELS.get(policy.partition(":")[0], "score")


def format_score(score: float | None) -> str:
    return "-" if score is None else f"{score:.3f}"


def token_label(text: str) -> str:
    return repr(inline_text(text))[1:-1] if text else "∅"


@dataclass
class TokenExplained(Message):
    index: int
    explanation: object | None  # greencode.decoding.explain.TokenExplanation
    error: str = ""


class TokenStrip(Banded):
    """The completion's tokens in their band colours, the selected one reversed."""

    def show(self, events: list[TokenEvent], selected: int) -> None:
        text = Text()
        for event in events:
            style = self.band_style(event.exit_layer, event.num_layers)
            if event.index == selected:
                style = style + Style(reverse=True, bold=True)
            text.append(token_label(event.text), style)
            text.append(" ")
        self.update(text)


class InspectorScreen(ModalScreen[None]):
    """Left/right move between the completion's tokens; Esc or F6 closes."""

    BINDINGS = [
        Binding("escape,f6", "close", "Close", id="close_inspector"),
        Binding("left,up", "move(-1)", "Previous token", id="inspect_previous"),
        Binding("right,down", "move(1)", "Next token", id="inspect_next"),
    ]

    def __init__(self, events: list[TokenEvent], exit_points: list[int], selected: int,
                 explain: Callable[[int], object]) -> None:
        super().__init__()
        self.events = list(events)
        self.exit_points = list(exit_points)
        self.selected = max(0, min(selected, len(self.events) - 1))
        self._explain = explain  # (index, cancelled) -> TokenExplanation or None if cancelled; called in a worker
        self.explanations: dict[int, object] = {}
        self.errors: dict[int, str] = {}
        self.rows: list[tuple[str, str, str, str]] = []  # (exit, score, top-3, note) as drawn: tests read it

    def compose(self) -> ComposeResult:
        with Vertical(id="inspector-box"):
            yield Label("inspect: why each token left where it did", id="inspector-title")
            yield TokenStrip(id="inspector-tokens")
            yield Static(id="inspector-summary")
            yield Static(id="inspector-table")
            yield Label("←/→ previous/next token · Esc / F6 close", id="inspector-close")

    def on_mount(self) -> None:
        self._draw()

    def action_move(self, step: int) -> None:
        self.selected = max(0, min(len(self.events) - 1, self.selected + step))
        self._draw()

    def action_close(self) -> None:
        self.workers.cancel_group(self, "inspect")
        self.dismiss(None)

    @work(thread=True, exclusive=True, group="inspect")
    def compute(self, index: int) -> None:
        worker = get_current_worker()
        time.sleep(SETTLE_SECONDS)  # arrows held down: only the token the user stops on is replayed
        if worker.is_cancelled:
            return
        try:
            explanation = self._explain(index, lambda: worker.is_cancelled)
        except GreencodeError as exc:
            self.post_message(TokenExplained(index, None, str(exc)))
            return
        except Exception as exc:  # a bug: show it, keep the playground alive
            self.log.error(exc)
            self.post_message(TokenExplained(index, None, f"{type(exc).__name__}: {exc}"))
            return
        if explanation is not None:  # kept even if the user moved on: coming back to it is then instant
            self.post_message(TokenExplained(index, explanation))

    def on_token_explained(self, message: TokenExplained) -> None:
        if message.explanation is not None:
            self.explanations[message.index] = message.explanation
        else:
            self.errors[message.index] = message.error
        if message.index == self.selected:
            self._draw()

    # -- drawing ---------------------------------------------------------------------------------

    def _draw(self) -> None:
        event = self.events[self.selected]
        self.query_one(TokenStrip).show(self.events, self.selected)
        explained = self.explanations.get(self.selected)
        if explained is None and self.selected not in self.errors:
            self.compute(self.selected)
        self.query_one("#inspector-summary", Static).update(self._summary(event, explained))
        self.rows = self._rows(event, explained)
        table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
        for name in ("exit", score_label(event.policy), "top-3 at this exit (probability)", ""):
            table.add_column(name, no_wrap=True)
        for exit_name, score, candidates, note in self.rows:
            style = band_style_name(note)
            table.add_row(Text(exit_name), Text(score), Text(candidates), Text(note, style=style))
        self.query_one("#inspector-table", Static).update(table)

    def _summary(self, event: TokenEvent, explained) -> Text:
        L = event.num_layers
        text = Text()
        text.append(f"token {event.index + 1} of {len(self.events)}: ", style="bold")
        text.append(f"'{token_label(event.text)}'", style="bold")
        where = "full depth" if event.exit_layer == L else f"layer {event.exit_layer}"
        text.append(f" exited at {where} of {L} ({event.policy})\n")
        if event.index == 0:
            text.append("the first token comes out of the prompt's prefill at full depth: no policy is asked\n",
                        style="dim")
        if self.selected in self.errors:
            text.append(f"candidates unavailable: {self.errors[self.selected]}", style="red")
        elif explained is None:
            text.append("computing the candidates (replays this completion once, off the UI)...", style="dim")
        else:
            full = explained.full_top1
            if explained.equals_full:
                text.append("equals full depth ", style="green")
                text.append(f"('{token_label(full.text)}')")
            else:
                text.append("differs from full depth ", style="red")
                text.append(f"(full depth gives '{token_label(full.text)}' p={full.probability:.2f})")
            oracle = "full depth (no exit point agrees)" if explained.oracle_layer == L else f"layer {explained.oracle_layer}"
            text.append(f" · oracle exit: {oracle}")
        return text

    def _rows(self, event: TokenEvent, explained) -> list[tuple[str, str, str, str]]:
        L = event.num_layers
        layers = [*self.exit_points, L]
        candidates = {x.layer: x.candidates for x in explained.exits} if explained is not None else {}
        rows = []
        for position, layer in enumerate(layers):
            passed = position < len(event.exit_scores)
            score = format_score(event.exit_scores[position]) if passed else ("" if layer == L else "not asked")
            top = "  ".join(f"'{token_label(c.text)}' {c.probability:.2f}" for c in candidates.get(layer, []))
            notes = []
            if layer == event.exit_layer:
                notes.append("◀ exit")
            if explained is not None and layer == explained.oracle_layer:
                notes.append("oracle")
            rows.append(("full" if layer == L else str(layer), score, top or "...", " ".join(notes)))
        return rows


def band_style_name(note: str) -> str:
    return "bold" if "exit" in note else ("italic" if note else "")

