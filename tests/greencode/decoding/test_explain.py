"""The inspector's numbers: a replayed token meets the cache it met while streaming."""

from __future__ import annotations

import pytest

from greencode.decoding.engine import EarlyExitEngine
from greencode.errors import GreencodeError
from greencode.decoding.explain import explain_token
from greencode.exits.oracle import first_agreeing_exit

PROMPT = "def read_lines(path):\n    with open(path) as handle:\n        return [line.rstrip() for line in"


def _explain_all(engine, summary, max_new_tokens):
    ids = [e.token_id for e in summary.events]
    layers = [e.exit_layer for e in summary.events]
    return [explain_token(engine, PROMPT, ids, layers, i, max_new_tokens) for i in range(len(ids))]


def test_replay_gives_the_streamed_token_at_its_exit_and_the_recorded_scores(tiny_model):
    engine = EarlyExitEngine(tiny_model)
    summary = engine.complete(PROMPT, "confidence:0.005", max_new_tokens=6)
    assert any(e.exit_layer < engine.num_layers for e in summary.events)  # some tokens left early
    for event, explained in zip(summary.events, _explain_all(engine, summary, 6)):
        at_exit = {x.layer: x for x in explained.exits}[event.exit_layer]
        assert at_exit.candidates[0].token_id == event.token_id  # greedy: the exit's top-1 is what came out
        assert [x.layer for x in explained.exits] == [*engine.exit_points, engine.num_layers]
        assert all(len(x.candidates) == 3 for x in explained.exits)
        # confidence's score is the max probability at the exit: the recorded one and the replayed one agree
        replayed = [x.candidates[0].probability for x in explained.exits[:len(event.exit_scores)]]
        assert replayed == pytest.approx(list(event.exit_scores), abs=1e-5)
        assert explained.equals_full == (event.token_id == explained.full_top1.token_id)


def test_oracle_of_a_full_depth_token_matches_a_recorded_run(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)
    recorded = engine.complete(PROMPT, max_new_tokens=5, record=True)
    for event, explained in zip(recorded.events, _explain_all(engine, recorded, 5)):
        trace = event.trace
        assert explained.full_top1.token_id == trace.final_top1 == event.token_id
        assert explained.oracle_layer == first_agreeing_exit(trace.exit_top1, trace.final_top1,
                                                             engine.exit_points, engine.num_layers)


def test_a_token_that_is_not_there_is_one_clear_error(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)
    with pytest.raises(GreencodeError, match="no token 3"):
        explain_token(engine, PROMPT, [1, 2], [12, 12], 3, 5)
