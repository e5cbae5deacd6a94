"""A threshold sweep on one prompt: full depth and a few thresholds of one policy, side by side.

The prompt is prefilled once; every policy decodes from a copy of that cache (EarlyExitEngine.prefill),
so the rows differ only in their exits. UI-free: the TUI runs it in a worker and draws the rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SWEEP_POINTS = 5  # thresholds around the knob (plus full depth)
SWEEP_SPACING = 2  # in knob steps between two swept thresholds


@dataclass(frozen=True)
class SweepRow:
    policy: str  # e.g. "full", "agent:0.88"
    threshold: float | None  # None for full depth
    text: str
    token_ids: list[int]
    tokens: int
    mean_exit_layer: float
    joules: float
    joules_saved: float  # against the same tokens at full depth (modelled per token, as everywhere)
    energy_source: str
    identical_to_full: bool
    first_difference: str  # "" when identical: "#3 'foo' (full: 'bar')"


def sweep_thresholds(center: float, step: float, points: int = SWEEP_POINTS, spacing: int = SWEEP_SPACING) -> list[float]:
    """`points` thresholds `spacing` knob steps apart, centred on `center` and slid to stay inside [0, 1]."""
    gap = spacing * step
    start = min(max(0.0, center - (points // 2) * gap), max(0.0, 1.0 - (points - 1) * gap))
    return [round(start + k * gap, 4) for k in range(points)]


def first_difference(ids: list[int], full_ids: list[int], texts: list[str], full_texts: list[str]) -> str:
    for index, (token, full_token) in enumerate(zip(ids, full_ids)):
        if token != full_token:
            return f"#{index + 1} {texts[index]!r} (full: {full_texts[index]!r})"
    if len(ids) != len(full_ids):
        return f"#{min(len(ids), len(full_ids)) + 1}: {'longer' if len(ids) > len(full_ids) else 'shorter'}"
    return ""


def run_sweep(engine, prompt: str, kind: str, thresholds: list[float], options: dict,
              stream_with: Callable, on_row: Callable[[SweepRow], None], cancelled: Callable[[], bool]) -> list[SweepRow]:
    """Full depth, then `kind`:T for each threshold, on one prefill of `prompt`. `stream_with(policy, prefilled)`
    starts one completion (the caller decides how a policy is given to its engine); `on_row` gets each row
    as it is done; `cancelled()` is checked between and during completions."""
    prefilled = engine.prefill(prompt, options.get("max_new_tokens", 15))
    rows: list[SweepRow] = []
    full = None
    for policy in ["full"] + [f"{kind}:{t:g}" for t in thresholds]:
        if cancelled():
            break
        completion = stream_with(policy, prefilled)
        events = []
        for event in completion:
            events.append(event)
            if cancelled():
                completion.cancel()
        summary = completion.summary
        if summary.stop_reason == "cancelled":
            break
        ids, texts = [e.token_id for e in events], [e.text for e in events]
        if full is None:
            full = (ids, texts, summary.text)
        row = SweepRow(policy, None if policy == "full" else float(policy.partition(":")[2]), summary.text, ids,
                       summary.tokens, summary.mean_exit_layer, summary.joules, summary.joules_saved,
                       summary.energy_source, summary.text == full[2],
                       "" if summary.text == full[2] else first_difference(ids, full[0], texts, full[1]))
        rows.append(row)
        on_row(row)
    return rows
