"""A deterministic stand-in for EarlyExitEngine (same API, real TokenEvents) so UI tests need no model.

Tokens come from a script of (text, exit layer). Under `full` every token runs at the final layer, as the
real engine does. With `gated=True` each token waits for `release()`, so a test can act between tokens.
Each token records a made-up policy score per exit point it passed; `explain` answers from the script
(the top-1 at a token's own exit is the token; full depth agrees from the token's "oracle" layer on), and
`record=True` returns traced events whose oracle exit is the scripted `ORACLE` layer.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

from greencode.decoding.engine import CostModel, ExitTrace, TracedEvent
from greencode.errors import GreencodeError
from greencode.decoding.events import CompletionSummary, TokenEvent, eol_cut
from greencode.decoding.explain import Candidate, ExitCandidates, TokenExplanation
from greencode.exits.policies import THRESHOLD_KINDS, check_threshold, split_policy

JOULES_PER_LAYER = 0.01
SECONDS_PER_TOKEN = 0.05
SCRIPT = [("print", 4), ("(", 8), ("fib", 12), ("onacci", 19), ("(", 23), ("10", 27), (")", 30),
          (")", 6), ("\n", 30), ("    return", 14)]
ORACLE = [4, 6, 8, 12, 14, 23, 30, 4, 27, 10]  # per script position: the first exit point agreeing with full


def fake_scores(index: int, exit_points: list[int], exit_layer: int) -> tuple:
    """P(exit) made up per token and exit point, rising with depth (deterministic)."""
    passed = [p for p in exit_points if p <= exit_layer]
    return tuple(round(0.05 + 0.9 * (k + 1) / len(exit_points) - 0.01 * (index % 3), 3) for k in range(len(passed)))


class FakeCompletion:
    def __init__(self, engine: "FakeEngine", policy: str, max_new_tokens: int, stop_at_eol: bool,
                 record: bool = False, stop_rule=None):
        self.engine, self.max_new_tokens, self.stop_at_eol, self.record = engine, max_new_tokens, stop_at_eol, record
        self.stop_rule = stop_rule  # as the real engine: stop once it cuts, and cut the final text with it
        self.policy = policy
        self._cancelled = threading.Event()
        self.summary: CompletionSummary | None = None
        self._events = self._run()

    def __iter__(self):
        return self._events

    def cancel(self) -> None:
        self._cancelled.set()

    def set_policy(self, policy: str) -> None:
        self.policy = self.engine.make_policy(policy)

    def set_threshold(self, value: float) -> None:
        check_threshold("agent", value)
        kind = self.policy.partition(":")[0]
        if kind in THRESHOLD_KINDS:
            self.policy = f"{kind}:{value:g}"

    def _wait_for_release(self, timeout: float = 10.0) -> bool:
        """Block until the test releases a token; False if cancelled meanwhile (as the app does on exit)."""
        for _ in range(int(timeout / 0.02)):
            if self.engine._gate.acquire(timeout=0.02):
                return True
            if self._cancelled.is_set():
                return False
        raise RuntimeError("fake engine: the test never released the next token")

    def _run(self):
        engine, L = self.engine, self.engine.num_layers
        events, text, reason = [], "", "length"
        try:
            for index in range(self.max_new_tokens):
                if engine.gated and not self._wait_for_release():
                    reason = "cancelled"
                    break
                piece, layer = engine.script[index % len(engine.script)]
                policy = self.policy
                layer, piece = engine.threshold_effect(policy, layer, piece)
                layer = L if policy == "full" or self.record else layer
                scores = () if policy == "full" else fake_scores(index, engine.exit_points, layer)
                event = TokenEvent(index, 1000 + index + (500 if piece == "y" else 0), piece, layer, layer, L, scores[-1] if scores else None,
                                   SECONDS_PER_TOKEN, layer * JOULES_PER_LAYER, engine.energy_source,
                                   L * JOULES_PER_LAYER, policy, exit_scores=scores)
                if self.record:
                    event = TracedEvent(**event.__dict__, trace=engine.trace(index))
                events.append(event)
                text += piece
                engine.tokens_computed += 1
                yield event
                if self.stop_at_eol and eol_cut(text) is not None:
                    reason = "eol"
                    break
                if self.stop_rule is not None and self.stop_rule.cut(text) is not None:
                    reason = "stop"
                    break
                if index == self.max_new_tokens - 1:
                    break
                if self._cancelled.is_set():
                    reason = "cancelled"
                    break
        finally:
            final = text[:eol_cut(text)] if reason == "eol" else text
            cut = self.stop_rule.cut(final, finished=True) if self.stop_rule is not None else None
            final = final if cut is None else final[:cut]
            self.summary = CompletionSummary.of(
                events, L, text=final, prompt_tokens=3, dropped_prompt_tokens=0,
                seconds=SECONDS_PER_TOKEN * max(0, len(events) - 1), prefill_seconds=SECONDS_PER_TOKEN,
                energy_source=engine.energy_source, stop_reason=reason)
            engine.summaries.append(self.summary)


class FakeEngine:
    def __init__(self, script=SCRIPT, gated: bool = False, agent_available: bool = True,
                 energy_source: str = "estimate"):
        self.script = list(script)
        self.gated = gated
        self.agent_available = agent_available
        self.energy_source = energy_source
        self.num_layers = 30
        self.exit_points = [4, 6, 8, 10, 12, 14, 19, 23, 27]
        self.loaded = SimpleNamespace(name="fake-smollm")
        self.agent_file = "fake-agent.safetensors" if agent_available else None
        self.streamed_policies: list[str] = []  # the policy each stream started with
        self.prompts: list[str] = []
        self.summaries: list[CompletionSummary] = []
        self.tokens_computed = 0
        self.explained: list[int] = []  # token indices explain() was asked for
        self.explain_gate: threading.Event | None = None  # set: explain() waits for it (a slow replay)
        self.cost = CostModel(self.num_layers, 8.0, 0.06, 1.3)
        self._gate = threading.Semaphore(0)

    def describe_exit_head(self) -> str:
        return ""  # the panel shows no exit-head line for the stand-in

    def threshold_effect(self, policy: str, layer: int, piece: str) -> tuple[int, str]:
        """Thresholds away from 0.9 move exits one exit point per 0.04 (deeper when stricter); below 0.84
        the token "x" comes out as "y" (so a sweep finds a threshold whose text differs)."""
        kind, _, arg = policy.partition(":")
        if kind not in ("agent", "confidence"):
            return layer, piece
        value = float(arg)
        piece = "y" if piece == "x" and value < 0.84 else piece
        if layer not in self.exit_points:
            return layer, piece
        shift = round((value - 0.9) / 0.04)
        points = [*self.exit_points, self.num_layers]
        layer = points[max(0, min(len(points) - 1, points.index(layer) + shift))]
        return layer, piece

    def trace(self, index: int) -> ExitTrace:
        """Exit top-1s that first agree with the token at its scripted oracle layer."""
        token, oracle = 1000 + index, ORACLE[index % len(ORACLE)]
        top1 = [token if p >= oracle else 1 for p in self.exit_points]
        return ExitTrace(None, top1, token)

    def explain(self, prompt, token_ids, exit_layers, index, max_new_tokens) -> TokenExplanation:
        self.explained.append(index)
        if self.explain_gate is not None and not self.explain_gate.wait(10):
            raise RuntimeError("fake engine: the test never opened the explain gate")
        text = self.script[index % len(self.script)][0]
        token, oracle = token_ids[index], ORACLE[index % len(ORACLE)]
        exits = []
        for layer in [*self.exit_points, self.num_layers]:
            agrees = layer >= oracle or layer == exit_layers[index]
            top = Candidate(token, text, 0.6) if agrees else Candidate(1, "x", 0.4)
            exits.append(ExitCandidates(layer, [top, Candidate(2, "y", 0.2), Candidate(3, "z", 0.1)]))
        return TokenExplanation(index, token, exit_layers[index], exits, exits[-1].candidates[0], oracle)

    def prefill(self, prompt, max_new_tokens=15, record=False):
        if not prompt:
            raise GreencodeError("the prompt is empty: give some code before the cursor")
        return SimpleNamespace(prompt=prompt)

    def release(self, tokens: int = 1) -> None:
        for _ in range(tokens):
            self._gate.release()

    def make_policy(self, policy: str) -> str:
        kind, arg = split_policy(policy)
        if kind == "agent" and not self.agent_available:
            raise GreencodeError("policy agent:T needs an agent file: pass --agent PATH or set [agent].path")
        return f"{kind}:{float(arg):g}" if kind in THRESHOLD_KINDS else policy

    def stream(self, prompt, policy="full", max_new_tokens=15, stop=None, stop_at_eol=False, temperature=0.0,
               top_p=1.0, record=False, seed=None, prefilled=None, record_scores=True, stop_rule=None) -> FakeCompletion:
        if not prompt:
            raise GreencodeError("the prompt is empty: give some code before the cursor")
        self.prompts.append(prompt)
        policy = self.make_policy(policy)
        self.streamed_policies.append(policy)
        return FakeCompletion(self, policy, max_new_tokens, stop_at_eol, record, stop_rule)
