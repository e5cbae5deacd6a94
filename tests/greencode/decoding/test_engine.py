import threading

import pytest
import torch

import greencode.decoding.engine as engine_module
from greencode.decoding.engine import EarlyExitEngine
from greencode.errors import GreencodeError

PROMPT = "import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        return [line.rstrip() for line in"


def _hf_greedy(loaded, prompt, n):
    ids = loaded.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    out = loaded.model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True)
    return out[0, ids.shape[1]:].tolist()


def test_full_depth_equals_hf_generate(tiny_model):
    engine = EarlyExitEngine(tiny_model)
    summary = engine.complete(PROMPT, max_new_tokens=16)
    assert [e.token_id for e in summary.events] == _hf_greedy(tiny_model, PROMPT, 16)
    assert all(e.exit_layer == tiny_model.num_layers for e in summary.events)
    assert summary.layers_skipped_frac == 0.0


def _reference_fixed(loaded, ids, exit_layer, n, allowed=None):
    """Slow reference: every step rebuilds the whole cache from each position's recorded layer inputs,
    where a layer a position skipped gets the state it exited with (state propagation). With `allowed`
    (a shortlist), an exited token is the argmax of the full-vocabulary logits masked to it."""
    from transformers import DynamicCache

    adapter, L = loaded.adapter, loaded.num_layers
    inputs = []  # inputs[p][j]: the state layer j's K/V come from at position p
    all_logits, tokens = [], []
    sequence = list(ids)
    with torch.no_grad():
        positions = torch.arange(len(ids))[None]
        hidden = adapter.embed(torch.tensor([ids]), positions)
        context = adapter.layer_context(hidden, positions)
        per_layer = []
        for j in range(L):
            per_layer.append(hidden)
            hidden = adapter.run_layer(j, hidden, context, None)
        inputs = [[per_layer[j][:, p:p + 1] for j in range(L)] for p in range(len(ids))]
        logits = adapter.logits(hidden[:, -1:])[0, -1]
        for step in range(n):
            token = int(logits.argmax())
            tokens.append(token)
            all_logits.append(logits)
            if step == n - 1:
                break
            cache = DynamicCache(config=loaded.model.config)
            for p, layer_inputs in enumerate(inputs):
                pos = torch.tensor([[p]])
                ctx = adapter.layer_context(layer_inputs[0], pos)
                for j in range(L):
                    cache.update(*adapter.kv(j, layer_inputs[j], ctx), j)
            position = torch.tensor([[len(sequence)]])
            hidden = adapter.embed(torch.tensor([[token]]), position)
            ctx = adapter.layer_context(hidden, position)
            record = []
            for j in range(exit_layer):
                record.append(hidden)
                hidden = adapter.run_layer(j, hidden, ctx, cache)
            record += [hidden] * (L - exit_layer)  # skipped layers see the exited state
            inputs.append(record)
            sequence.append(token)
            logits = adapter.logits(hidden)[0, -1]
            if allowed is not None and exit_layer < L:
                logits = torch.full_like(logits, float("-inf")).index_copy(0, allowed, logits[allowed])
    return tokens, all_logits


def test_state_propagation_matches_a_slow_reference(tiny_model, monkeypatch):
    seen = []
    real_sample = engine_module.sample

    def recording_sample(logits, *args):
        seen.append(logits.clone())
        return real_sample(logits, *args)

    monkeypatch.setattr(engine_module, "sample", recording_sample)
    engine = EarlyExitEngine(tiny_model)
    summary = engine.complete(PROMPT, "fixed:6", max_new_tokens=8)
    ids, _ = engine.encode(PROMPT, 8)
    tokens, logits = _reference_fixed(tiny_model, ids, 6, 8)
    assert [e.token_id for e in summary.events] == tokens
    assert summary.exit_layers == [tiny_model.num_layers] + [6] * 7  # the first token comes from the prefill
    for got, want in zip(seen, logits):
        assert torch.allclose(got, want, atol=1e-4)


def test_confidence_policy_scores_and_exits(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)  # always confident enough: exits at the first point
    summary = engine.complete(PROMPT, "confidence:0.0", max_new_tokens=5)
    assert summary.exit_layers[1:] == [engine.exit_points[0]] * 4
    assert all(0.0 < e.score <= 1.0 for e in summary.events[1:])
    assert engine.complete(PROMPT, "confidence:1.0", max_new_tokens=5).exit_layers == [tiny_llama.num_layers] * 5


def test_entropy_policy(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)
    assert engine.complete(PROMPT, "entropy:100", max_new_tokens=3).exit_layers[1:] == [engine.exit_points[0]] * 2
    assert engine.complete(PROMPT, "entropy:0", max_new_tokens=3).exit_layers == [tiny_llama.num_layers] * 3


def test_policy_and_threshold_change_between_tokens(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)
    completion = engine.stream(PROMPT, "confidence:1.0", max_new_tokens=6)
    layers = []
    for event in completion:
        layers.append(event.exit_layer)
        if event.index == 2:
            completion.set_threshold(0.0)  # the next token of this completion already uses it
    assert layers[:3] == [12, 12, 12] and layers[3:] == [4, 4, 4]
    assert [e for e in completion.summary.exit_layers] == layers


def test_set_policy_changes_only_that_completion(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)
    switched = engine.stream(PROMPT, "full", max_new_tokens=5)
    other = engine.stream(PROMPT, "fixed:6", max_new_tokens=5)
    layers = []
    for event, _ in zip(switched, other):  # two completions interleaved on one engine
        layers.append(event.exit_layer)
        if event.index == 1:
            switched.set_policy("fixed:4")
    list(other)  # to its end
    assert layers == [12, 12, 4, 4, 4]
    assert other.summary.exit_layers == [12, 6, 6, 6, 6] and other.policy.name == "fixed:6"


def test_cancel_from_another_thread_stops_the_stream(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)
    completion = engine.stream(PROMPT, max_new_tokens=50)
    got = []
    for event in completion:
        got.append(event)
        if event.index == 3:
            threading.Thread(target=completion.cancel).start()
            threading.Event().wait(0.05)
    assert len(got) == 4
    assert completion.summary.stop_reason == "cancelled"


def test_stop_sequences_and_end_of_line(default_model):
    engine = EarlyExitEngine(default_model)
    prompt = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return"
    line = engine.complete(prompt, max_new_tokens=20, stop_at_eol=True)
    assert line.stop_reason == "eol" and "\n" not in line.text.strip()
    stopped = engine.complete(prompt, max_new_tokens=20, stop=["b"])
    assert stopped.stop_reason == "stop" and "b" not in stopped.text


def test_long_prompts_keep_the_tokens_nearest_the_cursor(tiny_llama):
    engine = EarlyExitEngine(tiny_llama, max_context_tokens=32)
    long_prompt = "x = 1\n" * 200
    summary = engine.complete(long_prompt, max_new_tokens=2)
    assert summary.prompt_tokens == 32 and summary.dropped_prompt_tokens > 0
    ids = tiny_llama.tokenizer(long_prompt, add_special_tokens=False)["input_ids"]
    assert engine.encode(long_prompt, 2)[0] == ids[-32:]


def test_sampling_is_reproducible_with_a_seed(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)
    first = engine.complete(PROMPT, max_new_tokens=6, temperature=1.0, top_p=0.9, seed=3)
    second = engine.complete(PROMPT, max_new_tokens=6, temperature=1.0, top_p=0.9, seed=3)
    assert first.text == second.text


def test_record_mode_traces_every_exit_point(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)
    events = engine.complete(PROMPT, "confidence:0.0", max_new_tokens=4, record=True).events
    full = EarlyExitEngine(tiny_llama).complete(PROMPT, max_new_tokens=4).events
    assert [e.token_id for e in events] == [e.token_id for e in full]  # recording runs at full depth
    for event in events:
        assert event.trace.observations.shape == (len(engine.exit_points), tiny_llama.hidden_size)
        assert len(event.trace.exit_top1) == len(engine.exit_points)
        assert event.trace.final_top1 == event.token_id


def test_energy_fields_say_their_source(tiny_llama):
    summary = EarlyExitEngine(tiny_llama).complete(PROMPT, "fixed:4", max_new_tokens=4)
    assert summary.energy_source == "estimate"
    assert all(e.energy_source == "estimate" and e.joules > 0 for e in summary.events)
    assert summary.full_depth_joules > summary.joules  # early exits cost less than full depth


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": ""}, "prompt is empty"),
    ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
])
def test_bad_requests(tiny_llama, kwargs, message):
    engine = EarlyExitEngine(tiny_llama)
    options = {"prompt": PROMPT, "max_new_tokens": 3, **kwargs}
    with pytest.raises(GreencodeError, match=message):
        engine.stream(options.pop("prompt"), **options)


@pytest.mark.parametrize("policy, message", [
    ("fast", "unknown policy"), ("fixed:5", "not an exit point"), ("confidence:1.5", "must be in \\[0, 1\\]"),
    ("agent:2", "must be in \\[0, 1\\]"), ("agent:0.9", "needs an agent file"), ("confidence:high", "not a number"),
])
def test_bad_policies(tiny_llama, policy, message):
    with pytest.raises(GreencodeError, match=message):
        EarlyExitEngine(tiny_llama).make_policy(policy)


@pytest.mark.integration
def test_default_model_full_depth_equals_hf_generate(default_model):
    prompt = open(engine_module.__file__).read()[:1500]
    summary = EarlyExitEngine(default_model).complete(prompt, max_new_tokens=16)
    assert [e.token_id for e in summary.events] == _hf_greedy(default_model, prompt, 16)


def test_a_vanishing_temperature_is_greedy(tiny_llama):
    engine = EarlyExitEngine(tiny_llama)
    greedy = engine.complete(PROMPT, max_new_tokens=4)
    tiny = engine.complete(PROMPT, max_new_tokens=4, temperature=1e-40, seed=1)
    assert tiny.text == greedy.text


def test_a_shared_prefill_gives_the_same_completions(tiny_model):
    engine = EarlyExitEngine(tiny_model)
    prefilled = engine.prefill(PROMPT, 6)
    for policy in ("full", "fixed:6", "confidence:0.0", "full"):
        shared = engine.complete(PROMPT, policy, max_new_tokens=6, prefilled=prefilled)
        alone = engine.complete(PROMPT, policy, max_new_tokens=6)
        assert [e.token_id for e in shared.events] == [e.token_id for e in alone.events]
        assert shared.exit_layers == alone.exit_layers
        assert shared.prefill_seconds == prefilled.measured.seconds
    with pytest.raises(GreencodeError, match="up to its max_new_tokens"):
        engine.stream(PROMPT, max_new_tokens=7, prefilled=prefilled)
