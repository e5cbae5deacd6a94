"""The compare view (F4), mixed into GreencodeApp: the same prompt completed with the panel's early-exit
policy and at full depth, one after the other on the engine, each with its own policy; then each token's
oracle exit (tui/lens.py)."""

from __future__ import annotations

from textual import work
from textual.worker import get_current_worker

from tui.messages import CompareSideFinished, CompareTokenGenerated, while_running
from tui.screens import CompareScreen
from tui.settings import policy_string


class CompareActions:
    """Needs the app's engine, _engine_lock, _prompt, _options, _stream_tokens, session and policy state."""

    _compare_run_id = -1

    def action_compare(self) -> None:
        if isinstance(self.screen, CompareScreen):
            return
        if self.engine is None:
            self.notify("the model is not loaded", severity="warning")
            return
        prompt = self._prompt()
        if not prompt.strip():
            self.notify("nothing before the cursor to complete", severity="warning")
            return
        if self.live is None or self.live.summary is None:
            self.cancel_completion()  # one in flight stops (the engine runs one at a time); a finished one stays
        kind = self.policy_kind
        if kind == "full":
            kind = "confidence" if self.agent_unavailable else "agent"
        early = policy_string(kind, self.threshold, self.policy_arg)
        line_mode = self.mode == "line"
        self._run_id += 1
        self._compare_run_id = self._run_id
        # Closing stops the comparison only: the completion shown underneath stays for Tab or Esc.
        self.push_screen(CompareScreen(early, self.engine.num_layers, line_mode), lambda _: self.stop_generation())
        self.run_compare(self._run_id, prompt, early, self._options(line_mode, prompt))

    @work(thread=True, exclusive=True, group="complete")
    def run_compare(self, run_id: int, prompt: str, early: str, options: dict) -> None:
        with self._engine_lock:
            try:
                events = []
                for side, policy in (("early", early), ("full", "full")):
                    if get_current_worker().is_cancelled:
                        return
                    events = []
                    summary = self._stream_tokens(prompt, dict(options, policy=policy),
                                                  lambda e, side=side, kept=events: (
                                                      kept.append(e),
                                                      self.post_message(CompareTokenGenerated(run_id, side, e))))
                    self.post_message(CompareSideFinished(run_id, side, summary))
                if not get_current_worker().is_cancelled:
                    self.mark_oracle(run_id, prompt, options, events)
            except Exception as exc:
                self._failed(run_id, exc)

    @while_running
    def on_compare_token_generated(self, message: CompareTokenGenerated) -> None:
        self.session.add(message.event)
        if message.run_id == self._compare_run_id and isinstance(self.screen, CompareScreen):
            self.screen.add_token(message.side, message.event)
        self._update_figures()

    @while_running
    def on_compare_side_finished(self, message: CompareSideFinished) -> None:
        self.session.completions += 1
        if message.run_id == self._compare_run_id and isinstance(self.screen, CompareScreen):
            self.screen.finish(message.side, message.summary)
