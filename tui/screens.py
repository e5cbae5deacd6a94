"""Modal screens: help, quit-with-unsaved-changes, and the side-by-side compare view."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from greencode.decoding.events import CompletionSummary, TokenEvent
from tui.ghost import ghost_pieces
from tui.panel import CompletionView
from tui.stats import CompletionStats

# (keys, what they do): the help screen's table. The footer shows the main ones from the app's bindings.
HELP_KEYS = [
    ("F5 / ctrl+space", "complete now (also after an idle pause, see [tui].idle_ms)"),
    ("Tab", "accept the completion: insert it at the cursor"),
    ("ctrl+right / ctrl+l", "accept its next word / its next line"),
    ("Esc", "dismiss the completion (stops it if still streaming)"),
    ("typing, moving", "cancels an in-flight completion"),
    ("F2", "line mode (stop at the end of the line) / block mode"),
    ("F3", "switch policy: agent -> full -> confidence"),
    ("F9 / ctrl+up", "threshold up (stricter: exits later)"),
    ("F8 / ctrl+down", "threshold down (exits earlier)"),
    ("mouse", "click or scroll the threshold bar, or its - / +"),
    ("F4", "compare with full depth: joules, each token's oracle exit"),
    ("F6 / click a token", "inspect: exits, scores, top-3 per exit point (←/→)"),
    ("F7", "sweep thresholds on this prompt; Enter sets the knob"),
    ("Enter / }", "keep indentation, +1 after ':' or '{'; '}' dedents"),
    ("ctrl+g", "go to line"),
    ("ctrl+s", "save (atomic: temp file + rename, keeps the file's mode)"),
    ("ctrl+z / ctrl+y", "undo / redo"),
    ("F1", "this help"),
    ("ctrl+q", "quit (asks first when there are unsaved changes)"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "close", "Close", id="close_help")]

    def compose(self) -> ComposeResult:
        table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2, 0, 0))
        table.add_column("key", no_wrap=True)
        table.add_column("what it does")
        for keys, what in HELP_KEYS:
            table.add_row(Text(keys), Text(what))  # Text: "[tui]" is not markup
        legend = Text("Ghost text colour: the layer each token exited at, green (shallow) to red (final layer).",
                      style="italic")
        with Vertical(id="help-box"):
            yield Label("greencode playground: keys", id="help-title")
            yield Static(table, id="help-table")
            yield Static(legend, id="help-legend")
            yield Label("Esc / F1 to close", id="help-close")

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmQuitScreen(ModalScreen[str]):
    """Unsaved changes: returns "save", "discard" or "cancel"."""

    BINDINGS = [
        Binding("escape", "choose('cancel')", "Cancel", id="quit_cancel"),
        Binding("s", "choose('save')", "Save and quit", id="quit_save"),
        Binding("d", "choose('discard')", "Quit without saving", id="quit_discard"),
    ]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.file_name = name

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-box"):
            yield Label(f"{self.file_name} has unsaved changes.", id="quit-question")
            with Horizontal(id="quit-buttons"):
                yield Button("Save and quit (s)", id="save", variant="primary")
                yield Button("Quit without saving (d)", id="discard", variant="error")
                yield Button("Cancel (esc)", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


class FileChangedScreen(ModalScreen[str]):
    """The file changed on disk since it was opened: returns "overwrite", "reload" or "cancel"."""

    BINDINGS = [
        Binding("escape", "choose('cancel')", "Cancel", id="changed_cancel"),
        Binding("c", "choose('cancel')", "Cancel", show=False),
        Binding("o", "choose('overwrite')", "Overwrite", id="changed_overwrite"),
        Binding("r", "choose('reload')", "Reload from disk", id="changed_reload"),
    ]

    def __init__(self, what_happened: str) -> None:
        super().__init__()
        self.what_happened = what_happened

    def compose(self) -> ComposeResult:
        with Vertical(id="changed-box"):
            yield Label(f"{self.what_happened}.", id="changed-question")
            yield Label("Overwrite it with your text, reload it (your edits are dropped), or cancel?",
                        id="changed-hint")
            with Horizontal(id="changed-buttons"):
                yield Button("Overwrite (o)", id="overwrite", variant="error")
                yield Button("Reload (r)", id="reload", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


class CompareScreen(ModalScreen[None]):
    """Two completions of the same prompt: the early-exit policy's and the full model's, with their joules."""

    BINDINGS = [Binding("escape,f4", "close", "Close", id="close_compare")]
    SIDES = ("early", "full")

    def __init__(self, early_policy: str, num_layers: int, stop_at_eol: bool) -> None:
        super().__init__()
        self.titles = {"early": f"early exit ({early_policy})", "full": "full depth (full)"}
        self.num_layers = num_layers
        self.stop_at_eol = stop_at_eol
        self.events: dict[str, list[TokenEvent]] = {side: [] for side in self.SIDES}
        self.stats = {side: CompletionStats(num_layers) for side in self.SIDES}
        self.summaries: dict[str, CompletionSummary] = {}
        self.oracle_layers: list[int] = []  # per full-depth token, once marked

    def compose(self) -> ComposeResult:
        with Vertical(id="compare-box"):
            yield Label("compare: the same prompt, two policies", id="compare-title")
            with Grid(id="compare-grid"):
                for side in self.SIDES:
                    with Vertical(classes="compare-side"):
                        yield Label(self.titles[side], classes="compare-heading")
                        yield CompletionView(id=f"compare-{side}-text", classes="compare-text")
                        yield Static(id=f"compare-{side}-figures", classes="compare-figures")
            yield Static("running the early-exit completion...", id="compare-verdict")
            yield Static(id="compare-oracle")
            yield Label("Esc / F4 to close", id="compare-close")

    def on_mount(self) -> None:
        for side in self.SIDES:
            self._draw(side)

    def add_token(self, side: str, event: TokenEvent) -> None:
        self.events[side].append(event)
        self.stats[side].add(event)
        self._draw(side)

    def finish(self, side: str, summary: CompletionSummary) -> None:
        self.summaries[side] = summary
        self._draw(side)
        verdict = self.query_one("#compare-verdict", Static)
        if side == "early":
            verdict.update("running the full-depth completion...")
            return
        early, full = self.summaries.get("early"), summary
        if early is None:
            return
        share = early.joules / full.joules if full.joules > 0 else 0.0
        same = "identical" if early.text == full.text else "different"
        verdict.update(Text(f"early exit used {share:.0%} of the full-depth joules "
                            f"({early.joules:.3f} J vs {full.joules:.3f} J, {full.energy_source}); texts {same}"))

    def show_oracle(self, texts: list[str], layers: list[int], oracle_joules: float) -> None:
        """Under each full-depth token its oracle exit (L: none earlier agrees), and the modelled totals."""
        from tui.oracle_marks import marks_text

        self.oracle_layers = list(layers)
        early, full = self.summaries.get("early"), self.summaries.get("full")
        text = Text()
        text.append("oracle exit under each full-depth token (first exit point whose top-1 equals it)\n", style="bold")
        text.append_text(marks_text(texts, layers, self.num_layers, max(20, self.size.width - 4)))
        if early is not None and full is not None:
            text.append(f"\noracle {oracle_joules:.3f} J (modelled) · {self.titles['early']} {early.joules:.3f} J"
                        f" · full depth {full.joules:.3f} J ({full.energy_source})")
        self.query_one("#compare-oracle", Static).update(text)

    def _draw(self, side: str) -> None:
        summary = self.summaries.get(side)
        final = summary.text if summary is not None else None
        pieces = ghost_pieces(self.events[side], final, self.stop_at_eol)
        status = f"done ({summary.stop_reason})" if summary else ("streaming..." if self.events[side] else "waiting...")
        self.query_one(f"#compare-{side}-text", CompletionView).show(status, pieces, self.num_layers)
        stats = self.stats[side]
        figures = Text()
        figures.append(f"{stats.tokens} tokens   {stats.joules:.3f} J  {stats.energy_source}\n")
        figures.append(f"{stats.tokens_per_s:.1f} tok/s   mean exit {stats.mean_exit_layer:.1f}/{self.num_layers}"
                       f"   skipped {stats.layers_skipped_frac:.0%}")
        self.query_one(f"#compare-{side}-figures", Static).update(figures)

    def action_close(self) -> None:
        self.dismiss(None)
