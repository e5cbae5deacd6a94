import dataclasses

from greencode.decoding.engine import EarlyExitEngine
from greencode.exits.oracle import first_agreeing_exit
from tests.greencode.decoding.test_engine import PROMPT
from tests.greencode.exits.test_shortlist import stdlib_shortlist


def test_first_agreeing_exit():
    assert first_agreeing_exit([5, 7, 7], 7, [4, 6, 8], 12) == 6
    assert first_agreeing_exit([7, 1, 1], 7, [4, 6, 8], 12) == 4
    assert first_agreeing_exit([1, 2, 3], 7, [4, 6, 8], 12) == 12


def test_oracle_gives_full_depth_text_and_the_first_agreeing_exit(tiny_llama):
    loaded = dataclasses.replace(tiny_llama, info={"shortlist": stdlib_shortlist(tiny_llama.tokenizer, 400)})
    full = EarlyExitEngine(loaded).complete(PROMPT, max_new_tokens=10, record=True)
    oracle = EarlyExitEngine(loaded).complete(PROMPT, "oracle", max_new_tokens=10)
    assert [e.token_id for e in oracle.events] == [e.token_id for e in full.events]
    engine = EarlyExitEngine(loaded)
    expected = [first_agreeing_exit(e.trace.exit_top1, e.token_id, engine.exit_points, 12) for e in full.events[1:]]
    assert oracle.exit_layers[1:] == expected
    assert oracle.exit_layers[0] == 12  # the prefill's token
    assert all(e.layers_run == 12 for e in oracle.events)  # it ran every layer; its exit layer is modelled
    cost = engine.cost
    for event in oracle.events[1:]:
        want = cost.units(event.exit_layer, 1) if event.exit_layer < 12 else cost.full_units
        assert abs(event.modelled_units - want) < 1e-9

