"""The threshold sweep (F7): this prompt at full depth and at thresholds around the knob, as a table and
a bar plot of joules against threshold. Enter on a row sets the knob to its threshold."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from greencode.decoding.sweep import SweepRow

BAR_WIDTH = 30
COLUMNS = ("threshold", "tokens", "mean exit", "joules", "saved", "same as full", "first differing token")


def joules_plot(rows: list[SweepRow], width: int = BAR_WIDTH) -> Text:
    """One bar per row, as long as its joules (the longest row fills `width`)."""
    text = Text()
    top = max((r.joules for r in rows), default=0.0) or 1.0
    for row in rows:
        name = "full" if row.threshold is None else f"T={row.threshold:.2f}"
        cells = row.joules / top * width
        bar = "█" * int(cells) + (" ▏▎▍▌▋▊▉"[int((cells % 1) * 8)] if cells % 1 else "")
        text.append(f"{name:>7} ")
        text.append(f"{bar:<{width + 1}}", style="green" if row.identical_to_full else "yellow")
        text.append(f" {row.joules:.3f} J\n")
    text.rstrip()
    return text


class SweepScreen(ModalScreen["float | None"]):
    """Dismissed with the chosen row's threshold, or None."""

    BINDINGS = [Binding("escape,f7", "close", "Close", id="close_sweep")]

    def __init__(self, kind: str, thresholds: list[float], num_layers: int) -> None:
        super().__init__()
        self.kind, self.thresholds, self.num_layers = kind, thresholds, num_layers
        self.rows: list[SweepRow] = []
        self.finished = False

    def compose(self) -> ComposeResult:
        with Vertical(id="sweep-box"):
            yield Label(f"sweep: this prompt at full depth and {self.kind}:T for T in "
                        f"{', '.join(f'{t:.2f}' for t in self.thresholds)}", id="sweep-title")
            yield DataTable(id="sweep-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="sweep-plot")
            yield Static("running full depth...", id="sweep-status")
            yield Label("↑/↓ choose · Enter sets the knob · Esc / F7 close (stops the sweep)", id="sweep-close")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        table.focus()

    def add_row(self, row: SweepRow) -> None:
        self.rows.append(row)
        table = self.query_one(DataTable)
        name = "full" if row.threshold is None else f"{row.threshold:.2f}"
        table.add_row(name, str(row.tokens), f"{row.mean_exit_layer:.1f}/{self.num_layers}", f"{row.joules:.3f}",
                      f"{row.joules_saved:.3f}", "yes" if row.identical_to_full else "no",
                      Text(row.first_difference or "-"), key=name)
        self.query_one("#sweep-plot", Static).update(joules_plot(self.rows))
        left = len(self.thresholds) + 1 - len(self.rows)
        if left:
            following = self.thresholds[len(self.rows) - 1]
            self.query_one("#sweep-status", Static).update(f"running {self.kind}:{following:g}... ({left} to go)")

    def finish(self, error: str = "") -> None:
        self.finished = True
        status = f"sweep failed: {error}" if error else (
            f"done: {len(self.rows)} runs on one prefill · joules {self.rows[0].energy_source}" if self.rows else "stopped")
        self.query_one("#sweep-status", Static).update(Text(status))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        row = self.rows[event.cursor_row] if event.cursor_row < len(self.rows) else None
        if row is None or row.threshold is None:
            self.notify("full depth has no threshold: choose another row", severity="warning")
            return
        self.dismiss(row.threshold)

    def action_close(self) -> None:
        self.dismiss(None)
