"""Side-panel widgets: the threshold knob, per-token exit sparkline, exit histogram (which doubles as the
colour legend), the figures, and the coloured completion view. They only render what they are given."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Label, LoadingIndicator, Static

from greencode.exits.bands import BANDS, band_class, band_label, band_layers, band_of
from tui.messages import ThresholdRequested
from tui.settings import THRESHOLD_POLICIES, THRESHOLD_STEP
from tui.stats import CompletionStats, SessionStats

SPARK_CHARS = "▁▂▃▄▅▆▇█"
BAND_CLASSES = {f"band-{band}" for band in range(BANDS)}


def snap(value: float) -> float:
    """Round to the knob's step and clamp to [0, 1]."""
    return round(min(1.0, max(0.0, round(value / THRESHOLD_STEP) * THRESHOLD_STEP)), 4)


class Banded(Static):
    """A Static that draws with the band colours from app.tcss."""

    COMPONENT_CLASSES = BAND_CLASSES

    def band_style(self, exit_layer: int, num_layers: int):
        return self.get_component_rich_style(band_class(exit_layer, num_layers))


class ThresholdBar(Static):
    """Click anywhere on the bar to set the threshold there; the wheel nudges it."""

    value: float = 0.9
    active: bool = True

    def show(self, value: float, active: bool) -> None:
        self.value, self.active = value, active
        self.set_class(not active, "-inactive")
        self.refresh()

    def render(self) -> Text:
        width = max(1, self.size.width)
        filled = round(self.value * width)
        return Text("█" * filled + "░" * (width - filled))

    def on_click(self, event: events.Click) -> None:
        width = max(2, self.size.width)
        self.post_message(ThresholdRequested(value=snap(event.x / (width - 1))))

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self.post_message(ThresholdRequested(steps=1))

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self.post_message(ThresholdRequested(steps=-1))


class ThresholdKnob(Horizontal):
    """[-] ████████░░ [+]  — mouse; the keys are app bindings."""

    def compose(self) -> ComposeResult:
        yield Button("-", id="threshold-down", compact=True)
        yield ThresholdBar(id="threshold-bar")
        yield Button("+", id="threshold-up", compact=True)

    def on_mount(self) -> None:
        for button in self.query(Button):
            button.can_focus = False  # clicking the knob leaves the focus in the editor
            button.active_effect_duration = 0  # every click counts, however fast

    def show(self, value: float, active: bool) -> None:
        self.query_one(ThresholdBar).show(value, active)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(ThresholdRequested(steps=1 if event.button.id == "threshold-up" else -1))


class ExitSparkline(Banded):
    """One bar per token, as tall as its exit layer is deep, in its band colour (latest on the right)."""

    def show(self, exit_layers: list[int], num_layers: int) -> None:
        self._layers, self._num_layers = list(exit_layers), num_layers
        self.refresh()

    def render(self) -> Text:
        layers = getattr(self, "_layers", [])
        if not layers:
            return Text("no tokens yet", style="dim")
        num_layers = self._num_layers
        text = Text()
        for layer in layers[-max(1, self.size.width):]:
            level = round((layer / num_layers) * (len(SPARK_CHARS) - 1))
            text.append(SPARK_CHARS[level], self.band_style(layer, num_layers))
        return text


class ExitHistogram(Banded):
    """Tokens per colour band, labelled with the exit layers in each band: the legend of the ghost colours."""

    def show(self, exit_layers: list[int], exit_points: list[int], num_layers: int) -> None:
        self._layers, self._points, self._num_layers = list(exit_layers), list(exit_points), num_layers
        self.refresh(layout=True)  # the number of rows changes once the exit points are known

    def render(self) -> Text:
        if not getattr(self, "_num_layers", 0):
            return Text("legend: once the model is loaded", style="dim")
        groups = band_layers(self._points, self._num_layers)
        counts = {band: 0 for band, _ in groups}
        for layer in self._layers:
            band = band_of(layer, self._num_layers)
            counts[band] = counts.get(band, 0) + 1
        bar_width = max(1, self.size.width - 17)
        top = max(counts.values()) or 1
        text = Text()
        for band, layers in groups:
            style = self.get_component_rich_style(f"band-{band}")
            count = counts.get(band, 0)
            text.append("■ ", style)
            text.append(f"{band_label(layers, self._num_layers):<10}")
            text.append(f"{'█' * round(count / top * bar_width):<{bar_width}}", style)
            text.append(f" {count:>3}\n")
        text.rstrip()
        return text


def figures_text(stats: CompletionStats | None, session: SessionStats) -> Text:
    """The live figures: this completion, then the session."""
    text = Text()

    def row(label: str, value: str, note: str = "") -> None:
        text.append(f"{label:<10}", style="bold")
        text.append(value)
        text.append(f" {note}\n" if note else "\n", style="dim")

    if stats is None or not stats.tokens:
        row("tokens", "-")
    else:
        row("tokens", f"{stats.tokens} · {stats.tokens_per_s:.1f} tok/s")
        row("energy", f"{stats.joules:.3f} J", f"({stats.energy_source})")
        if stats.joules_saved >= 0:
            row("saved", f"{stats.joules_saved:.3f} J · {stats.joules_saved_frac:.0%}", "of full depth")
        else:  # honest about policies that cost more than running every layer
            row("extra", f"{-stats.joules_saved:.3f} J · {-stats.joules_saved_frac:.0%}", "vs full")
        row("mean exit", f"layer {stats.mean_exit_layer:.1f} of {stats.num_layers}")
        row("skipped", f"{stats.layers_skipped_frac:.0%} of layers")
    row("session", f"{session.joules:.3f} J", f"({session.energy_source or '-'})")
    row("", f"saved {session.joules_saved:.3f} J" if session.joules_saved >= 0
        else f"extra {-session.joules_saved:.3f} J vs full")
    row("", f"{session.tokens} tokens · {session.completions} done")
    text.rstrip()
    return text


class CompletionView(Banded):
    """A completion drawn in full (several lines in block mode), each token in its band colour."""

    def show(self, status: str, pieces: list[tuple[str, int]], num_layers: int) -> None:
        text = Text(status + "\n", style="dim")
        for piece, layer in pieces:
            text.append(piece, self.band_style(layer, num_layers))
        text.rstrip()
        self.update(text)


class SidePanel(VerticalScroll):
    """Model, policy and knob, the live figures, the exit sparkline and the legend. The app hands it what
    to show; it keeps no state of its own."""

    def __init__(self, model_spec: str) -> None:
        super().__init__(id="side", can_focus=False)  # clicks in the panel leave the focus in the editor
        self.model_spec = model_spec

    def compose(self) -> ComposeResult:
        yield Label("model", classes="section-title")
        yield Static(Text(f"loading {self.model_spec}...\nthe editor works meanwhile"), id="model-status")
        yield LoadingIndicator(id="model-loading")
        yield Label("policy", classes="section-title")
        yield Static(id="policy-status")
        yield ThresholdKnob(id="knob")
        yield Static(id="agent-note")
        yield Label("this completion", classes="section-title")
        yield Static(id="figures")
        yield ExitSparkline(id="sparkline")
        yield Label("exit layers (legend)", classes="section-title")
        yield ExitHistogram(id="histogram")

    def show_model(self, description: str, error: bool = False) -> None:
        self.query_one("#model-loading").display = False
        status = self.query_one("#model-status", Static)
        status.update(Text(description))  # Text: an error's "[...]" is not markup
        status.set_class(error, "-error")

    def show_policy(self, policy: str, kind: str, threshold: float, mode: str, tokens: int,
                    agent_unavailable: str, meaning: str = "") -> None:
        knob_active = kind in THRESHOLD_POLICIES
        if knob_active:
            rule = "P(exit) >= T" if kind == "agent" else "confidence >= P"
            # the calibrated meaning of T (held-out agreement with full depth) replaces the rule when known
            knob = f"{'T' if kind == 'agent' else 'P'} = {threshold:.2f}  {meaning or f'exit when {rule}'}"
        else:
            knob = f"knob {threshold:.2f}: for agent/confidence"
        lines = [f"{policy:<24}F3 switch", knob, f"{mode} mode: up to {tokens} tokens   F2",
                 "threshold: F8 - / F9 +, or click"]
        self.query_one("#policy-status", Static).update(Text("\n".join(lines)))
        note = self.query_one("#agent-note", Static)
        note.update(Text(agent_unavailable))  # the same line `complete` and `serve` print
        note.display = bool(agent_unavailable)
        self.query_one(ThresholdKnob).show(threshold, knob_active)

    def show_figures(self, stats: CompletionStats | None, session: SessionStats) -> None:
        self.query_one("#figures", Static).update(figures_text(stats, session))

    def show_exits(self, exit_layers: list[int], exit_points: list[int], num_layers: int) -> None:
        if exit_layers:
            self.query_one(ExitSparkline).show(exit_layers, num_layers)
        self.query_one(ExitHistogram).show(exit_layers, exit_points, num_layers)
