"""Go to line (ctrl+g): a one-field prompt; the app moves the cursor."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label


class GotoLineScreen(ModalScreen["int | None"]):
    """Dismissed with a 1-based line number, or None."""

    BINDINGS = [Binding("escape", "close", "Cancel", id="close_goto")]

    def __init__(self, line_count: int) -> None:
        super().__init__()
        self.line_count = line_count

    def compose(self) -> ComposeResult:
        with Vertical(id="goto-box"):
            yield Label(f"go to line (1-{self.line_count}), Enter to go, Esc to cancel", id="goto-title")
            yield Input(placeholder="line", type="integer", id="goto-input")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            line = int(event.value)
        except ValueError:
            self.notify("type a line number", severity="warning")
            return
        if not 1 <= line <= self.line_count:
            self.notify(f"line {line} is outside 1-{self.line_count}", severity="warning")
            return
        self.dismiss(line)

    def action_close(self) -> None:
        self.dismiss(None)
