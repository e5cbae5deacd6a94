import dataclasses

from greencode.decoding.engine import EarlyExitEngine
from tests.greencode.exits.test_shortlist import stdlib_shortlist
from tui.engines import describe_engine


def test_the_panel_describes_the_exit_head(tiny_llama):
    vocab = tiny_llama.adapter.vocab_size
    assert f"exit head: all {vocab} tokens" in describe_engine(EarlyExitEngine(tiny_llama))
    loaded = dataclasses.replace(tiny_llama, info={"shortlist": stdlib_shortlist(tiny_llama.tokenizer, 300)})
    engine = EarlyExitEngine(loaded)
    assert f"exit head: 300 of {vocab} tokens, {engine.cost.exit_head_units:.1f} layer-units" in describe_engine(engine)
