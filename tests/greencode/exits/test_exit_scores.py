"""The engine keeps the policy's score at every exit point a token passed (what the inspector shows)."""

from __future__ import annotations


from greencode.decoding.engine import EarlyExitEngine

PROMPT = "def read_lines(path):\n    with open(path) as handle:\n        return [line.rstrip() for line in"


def test_scores_are_recorded_per_exit_point_passed_and_end_with_the_deciding_one(tiny_model):
    engine = EarlyExitEngine(tiny_model)
    summary = engine.complete(PROMPT, "confidence:0.005", max_new_tokens=8)
    points = engine.exit_points
    assert summary.events[0].exit_scores == ()  # the first token comes out of the prefill: no policy asked
    assert any(e.exit_layer < engine.num_layers for e in summary.events)
    for event in summary.events[1:]:
        passed = [p for p in points if p <= event.exit_layer]
        assert len(event.exit_scores) == len(passed)
        assert all(0.0 <= s <= 1.0 for s in event.exit_scores)
        assert event.exit_scores[-1] == event.score
        if event.exit_layer < engine.num_layers:  # it left at the first exit point whose score reached P
            assert event.exit_scores[-1] >= 0.005 and all(s < 0.005 for s in event.exit_scores[:-1])


def test_recording_off_keeps_the_same_tokens_and_records_nothing(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)
    on = engine.complete(PROMPT, "confidence:0.005", max_new_tokens=6)
    off = engine.complete(PROMPT, "confidence:0.005", max_new_tokens=6, record_scores=False)
    assert [e.token_id for e in on.events] == [e.token_id for e in off.events]
    assert [e.exit_layer for e in on.events] == [e.exit_layer for e in off.events]
    assert all(e.exit_scores == () for e in off.events) and any(e.exit_scores for e in on.events)
