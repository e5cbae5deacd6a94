"""The policy switch and the threshold knob, mixed into GreencodeApp. The app owns the policy and its
threshold (UI-free rules in tui/settings.py and greencode/exits/policies.py); a streaming completion follows the
knob from its next token (Completion.set_threshold)."""

from __future__ import annotations

from greencode.errors import GreencodeError
from greencode.runtime import policy_or_fallback
from tui.messages import ThresholdRequested
from tui.panel import snap
from tui.screens import CompareScreen
from tui.settings import POLICY_CYCLE, THRESHOLD_POLICIES, THRESHOLD_STEP, policy_string


class KnobActions:
    """Needs the app's engine, _stream, panel, settings and the policy_kind / policy_arg / threshold / mode
    / agent_unavailable state it keeps."""

    @property
    def policy(self) -> str:
        return policy_string(self.policy_kind, self.threshold, self.policy_arg)

    def _apply_policy(self, kind: str, announce: bool = True) -> None:
        """Switch to `kind` (checked on the engine); agent falls back to confidence when the model has no
        agent (greencode.runtime's rule and note) or its agent does not load."""
        wanted = policy_string(kind, self.threshold, self.policy_arg)
        note = None
        if self.engine is not None:
            try:
                note = policy_or_fallback(self.engine, wanted)[1]
            except GreencodeError as exc:
                if kind != "agent":
                    self.notify(f"policy {wanted}: {exc}; using confidence:{self.threshold:g}", severity="error")
                    return self._apply_policy("confidence", announce)
                note = f"agent unavailable: {exc}; using confidence:{self.threshold:g}"
        if note:
            self.agent_unavailable = note
            if announce:
                self.notify(note, severity="warning", timeout=8)
            kind, self.policy_arg = "confidence", ""
        self.policy_kind = kind
        self._update_policy()

    def action_cycle_policy(self) -> None:
        if isinstance(self.screen, CompareScreen):
            return
        cycle = [k for k in POLICY_CYCLE if not (k == "agent" and self.agent_unavailable)]
        position = cycle.index(self.policy_kind) if self.policy_kind in cycle else -1
        self._apply_policy(cycle[(position + 1) % len(cycle)])

    def action_threshold(self, direction: int) -> None:
        self.set_threshold(snap(self.threshold + direction * THRESHOLD_STEP))

    def on_threshold_requested(self, message: ThresholdRequested) -> None:
        if message.value is not None:
            self.set_threshold(snap(message.value))
        else:
            self.action_threshold(message.steps)

    def set_threshold(self, value: float) -> None:
        """The knob: the app owns the threshold; the completion streaming now uses it from its next token."""
        if isinstance(self.screen, CompareScreen):
            return
        self.threshold = value
        stream = self._stream
        if stream is not None and self.policy_kind in THRESHOLD_POLICIES:
            stream.set_threshold(value)
        self._update_policy()

    def action_toggle_mode(self) -> None:
        self.mode = "block" if self.mode == "line" else "line"
        self._update_policy()

    def _update_policy(self) -> None:
        tokens = self.settings.line_tokens if self.mode == "line" else self.settings.block_tokens
        self.panel.show_policy(self.policy, self.policy_kind, self.threshold, self.mode, tokens, self.agent_unavailable,
                               self._knob_meaning())

    def _knob_meaning(self) -> str:
        """What T means on held-out code, from the shipped calibration (greencode.exits.knob), or ""."""
        from greencode.exits.knob import knob_figures, knob_for

        if self.policy_kind != "agent" or self.engine is None:
            return ""
        info = getattr(self.engine.loaded, "info", None) or {}
        figures = knob_figures(knob_for(info, getattr(self.engine, "agent_file", None)), self.threshold)
        return f"~{figures[1]:.0%} of tokens as full depth, {figures[2]:.2f}x modelled" if figures else ""
