"""The playground as a lens, mixed into GreencodeApp: the token inspector (F6, a click on a ghost token),
the threshold sweep (F7), the compare view's oracle marks, partial accept (ctrl+right a word, ctrl+l a
line) and go to line (ctrl+g). The computations live in greencode/ (explain, sweep, oracle)."""

from __future__ import annotations

from textual import work
from textual.worker import get_current_worker

from greencode.decoding.sweep import run_sweep, sweep_thresholds
from tui.ghost import drop_chars, next_line, next_word
from tui.goto import GotoLineScreen
from tui.inspector import InspectorScreen
from tui.messages import (GhostClicked, GhostPartRequested, OracleMarked, SweepFinished, SweepRowDone)
from tui.screens import CompareScreen
from tui.settings import THRESHOLD_STEP, policy_string
from tui.sweep import SweepScreen


class LensActions:
    """Needs the app's engine, live completion, _engine_lock, _prompt, _options and policy state."""

    _sweep_run_id = -1
    _partial_edits = 0  # editor changes made by a partial accept (they must not cancel the completion)

    def _on_base_screen(self) -> bool:
        return self.screen is self.screen_stack[0]

    def _model_refusal(self) -> str:
        if self.engine is not None:
            return ""
        return f"model failed to load: {self.model_error}" if self.model_error else "the model is still loading"

    def _threshold_kind(self) -> str:
        """The policy a sweep (or compare) varies: the current one if it has a threshold, else agent."""
        if self.policy_kind in ("agent", "confidence"):
            return self.policy_kind
        return "confidence" if self.agent_unavailable else "agent"

    # -- inspector -------------------------------------------------------------------------------

    def action_inspect(self, event_index: int | None = None) -> None:
        if isinstance(self.screen, InspectorScreen):
            self.screen.action_close()
            return
        if not self._on_base_screen():
            return
        refusal = self._model_refusal()
        live = self.live
        if not refusal and (live is None or not live.events):
            refusal = "no completion to inspect: press F5 for one, then F6"
        if refusal:
            self.notify(refusal, severity="warning")
            return
        if live.summary is None and self._stream is not None:
            self._stream.cancel()  # the shown tokens stay; the replay waits for the stream to stop
        events = list(live.events)
        start = event_index if event_index is not None else next(
            (e.index for e in events if e.exit_layer < e.num_layers), 0)  # the first early exit, if any
        self.push_screen(InspectorScreen(events, self.engine.exit_points, start,
                                         lambda i, cancelled: self._explain(live, events, i, cancelled)))

    def _explain(self, live, events, index: int, cancelled):
        """In the inspector's worker: replay this completion up to token `index` (engine lock held);
        None when the user moved on while it waited for the lock."""
        with self._engine_lock:
            if cancelled():
                return None
            return self.engine.explain(live.prompt, [e.token_id for e in events], [e.exit_layer for e in events],
                                       index, live.options["max_new_tokens"])

    def on_ghost_clicked(self, message: GhostClicked) -> None:
        live = self.live
        if live is None:
            return
        pieces = live.pieces()
        hidden = len(pieces) - len(drop_chars(pieces, live.accepted))  # whole pieces already accepted
        with_text = [e.index for e in live.events if e.text]
        position = message.piece + hidden
        if position < len(with_text):
            self.action_inspect(with_text[position])

    # -- partial accept ----------------------------------------------------------------------------

    def on_ghost_part_requested(self, message: GhostPartRequested) -> None:
        live, editor = self.live, self.editor
        text = editor.ghost_text
        if live is None or not text or editor.read_only:
            return
        part = next_word(text) if message.unit == "word" else next_line(text)
        live.accepted += len(part)
        self._partial_edits += 1
        editor.insert(part)
        live.anchor = editor.cursor_location  # the rest of the ghost now completes from here
        if live.summary is not None and part == text:
            self.cancel_completion()
            self.preview.show(f"accepted {live.accepted} characters", [], 1)
        else:
            self._show_live(live, f"accepted {live.accepted} characters · Tab the rest")

    def partial_edit_done(self) -> bool:
        """Called on each editor change: True when it was a partial accept's own insert."""
        if self._partial_edits:
            self._partial_edits -= 1
            return True
        return False

    # -- go to line --------------------------------------------------------------------------------

    def action_goto_line(self) -> None:
        if not self._on_base_screen():
            return

        def go(line: int | None) -> None:
            if line is not None:
                self.editor.move_cursor((line - 1, 0), center=True)

        self.push_screen(GotoLineScreen(self.editor.document.line_count), go)

    # -- sweep -------------------------------------------------------------------------------------

    def action_sweep(self) -> None:
        if isinstance(self.screen, SweepScreen):
            self.screen.action_close()
            return
        if not self._on_base_screen():
            return
        refusal = self._model_refusal()
        prompt = self._prompt() if not refusal else ""
        if not refusal and not prompt.strip():
            refusal = "nothing before the cursor to sweep from: move the cursor after some code"
        if refusal:
            self.notify(refusal, severity="warning")
            return
        if self._stream is not None:
            self.notify("stopped the streaming completion to run the sweep", timeout=3)
        self.cancel_completion()
        kind = self._threshold_kind()
        thresholds = sweep_thresholds(self.threshold, THRESHOLD_STEP)
        self._run_id += 1
        self._sweep_run_id = self._run_id
        self.push_screen(SweepScreen(kind, thresholds, self.engine.num_layers), lambda value: self._sweep_closed(kind, value))
        self.run_sweep(self._run_id, prompt, kind, thresholds, self._options(self.mode == "line", prompt))

    @work(thread=True, exclusive=True, group="complete")
    def run_sweep(self, run_id: int, prompt: str, kind: str, thresholds: list[float], options: dict) -> None:
        worker = get_current_worker()
        engine = self.engine

        def stream_with(policy, prefilled):
            return engine.stream(prompt, prefilled=prefilled, **dict(options, policy=policy))

        with self._engine_lock:
            error = ""
            try:
                run_sweep(engine, prompt, kind, thresholds, options, stream_with,
                          lambda row: self.post_message(SweepRowDone(run_id, row)), lambda: worker.is_cancelled)
            except Exception as exc:  # shown in the sweep's status line; a bug is logged too
                self.log.error(exc)
                error = str(exc)
            self.post_message(SweepFinished(run_id, error))

    def _current_sweep(self, run_id: int) -> SweepScreen | None:
        screen = self.screen
        return screen if run_id == self._sweep_run_id and isinstance(screen, SweepScreen) else None

    def on_sweep_row_done(self, message: SweepRowDone) -> None:
        if (screen := self._current_sweep(message.run_id)) is not None:
            screen.add_row(message.row)

    def on_sweep_finished(self, message: SweepFinished) -> None:
        if (screen := self._current_sweep(message.run_id)) is not None:
            screen.finish(message.error)

    def _sweep_closed(self, kind: str, value: float | None) -> None:
        self.workers.cancel_group(self, "complete")  # a sweep still running stops before its next token
        if value is None:
            return
        if self.policy_kind != kind:
            self._apply_policy(kind)
        self.set_threshold(value)
        self.notify(f"knob set from the sweep: {policy_string(kind, value, '')}", timeout=3)

    # -- compare: oracle marks -------------------------------------------------------------------

    def mark_oracle(self, run_id: int, prompt: str, options: dict, full_events: list) -> None:
        """In the compare worker, after the full-depth side: a `record=True` run gives each token's oracle exit."""
        from tui.oracle_marks import modelled_joules, oracle_layers

        engine = self.engine
        recorded = list(engine.stream(prompt, record=True, **dict(options, policy="full")))
        layers = oracle_layers(recorded, engine.exit_points, engine.num_layers)
        joules = modelled_joules(full_events, layers, engine.cost)
        self.post_message(OracleMarked(run_id, [e.text for e in recorded], layers, joules))

    def on_oracle_marked(self, message: OracleMarked) -> None:
        if message.run_id == self._compare_run_id and isinstance(self.screen, CompareScreen):
            self.screen.show_oracle(message.texts, message.layers, message.joules)
