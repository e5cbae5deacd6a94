import functools
import json

import pytest
import torch

from greencode.config import load_config
from greencode.decoding.engine import CostModel, EarlyExitEngine
from greencode.errors import GreencodeError
from greencode.info import model_info
from greencode.model.load import load_model
from greencode.model.weights import QUALITY_RECORD, QuantizedLinear, passing_forms, resolve_form, runnable_forms
from tests.greencode.decoding.test_engine import PROMPT, _hf_greedy, _reference_fixed

FAST_FORMS = [f for f in ("int8", "fp16") if f in runnable_forms("cpu")]
needs_fbgemm = pytest.mark.skipif(not FAST_FORMS, reason="this torch build has no fbgemm")


@functools.lru_cache(maxsize=None)
def _load(spec: str, weights: str):
    return load_model(spec, device="cpu", weights=weights)


@needs_fbgemm
@pytest.mark.parametrize("form", FAST_FORMS)
@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-opt"])
def test_full_depth_equals_hf_generate_on_the_same_quantized_model(spec, form):
    loaded = _load(spec, form)
    assert loaded.weights == form
    summary = EarlyExitEngine(loaded).complete(PROMPT, "full", max_new_tokens=12)
    assert [e.token_id for e in summary.events] == _hf_greedy(loaded, PROMPT, 12)


def _reference_fixed_after_a_batched_prompt(loaded, ids, exit_layer, n):
    """test_engine's slow reference, except that the prompt's keys and values come from one batched pass:
    int8 quantizes each call's input with one scale, so a position's K/V depend on what it was batched with
    (HF generate's prefill batches the prompt the same way). Generated positions are rebuilt every step."""
    import copy

    from transformers import DynamicCache

    adapter, L = loaded.adapter, loaded.num_layers
    with torch.no_grad():
        prompt_cache = DynamicCache(config=loaded.model.config)
        positions = torch.arange(len(ids))[None]
        hidden = adapter.embed(torch.tensor([ids]), positions)
        context = adapter.layer_context(hidden, positions)
        for j in range(L):
            hidden = adapter.run_layer(j, hidden, context, prompt_cache)
        logits, inputs, tokens = adapter.logits(hidden[:, -1:])[0, -1], [], []
        for step in range(n):
            tokens.append(int(logits.argmax()))
            if step == n - 1:
                break
            cache = copy.deepcopy(prompt_cache)
            for offset, layer_inputs in enumerate(inputs):
                ctx = adapter.layer_context(layer_inputs[0], torch.tensor([[len(ids) + offset]]))
                for j in range(L):
                    cache.update(*adapter.kv(j, layer_inputs[j], ctx), j)
            position = torch.tensor([[len(ids) + step]])
            hidden = adapter.embed(torch.tensor([[tokens[-1]]]), position)
            ctx = adapter.layer_context(hidden, position)
            record = []
            for j in range(exit_layer):
                record.append(hidden)
                hidden = adapter.run_layer(j, hidden, ctx, cache)
            inputs.append(record + [hidden] * (L - exit_layer))  # skipped layers see the exited state
            logits = adapter.logits(hidden)[0, -1]
    return tokens


@needs_fbgemm
@pytest.mark.parametrize("form", FAST_FORMS)
def test_quantized_state_propagation_matches_a_slow_reference(form):
    loaded = _load("tiny-random-llama", form)
    engine = EarlyExitEngine(loaded)
    summary = engine.complete(PROMPT, "fixed:6", max_new_tokens=8)
    ids = engine.encode(PROMPT, 8)[0]
    assert [e.token_id for e in summary.events] == _reference_fixed_after_a_batched_prompt(loaded, ids, 6, 8)
    if form == "fp16":  # fp16 weights are batch-invariant: the fully rebuilt reference holds too
        assert [e.token_id for e in summary.events] == _reference_fixed(loaded, ids, 6, 8)[0]


@needs_fbgemm
def test_every_layer_linear_and_the_head_take_the_form_and_read_fewer_bytes():
    fp32, int8 = _load("tiny-random-llama", "fp32"), _load("tiny-random-llama", "int8")
    linears = {name: m for name, m in int8.model.named_modules() if isinstance(m, QuantizedLinear)}
    assert len(linears) == 7 * int8.num_layers + 1  # q, k, v, o, gate, up, down per layer + the LM head
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.adapter.layers.modules())
    # the MLP down projections stay fp16, the rest are int8
    assert {name.rsplit(".", 1)[-1] for name, m in linears.items() if m.form == "fp16"} == {"down_proj"}
    head = int8.model.get_output_embeddings()
    assert head.form == "int8" and head.weight is int8.model.get_input_embeddings().weight  # tied: no copy
    assert int8.adapter.layer_bytes < fp32.adapter.layer_bytes / 2
    assert int8.adapter.head_bytes < fp32.adapter.head_bytes / 3
    cost = CostModel.of(int8.adapter)
    assert 0 < cost.propagation_units < 1 and cost.head_units > 0


@needs_fbgemm
@pytest.mark.parametrize("form", FAST_FORMS)
def test_a_quantized_linear_stays_close_to_the_float_one(form):
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 160)
    x = torch.randn(3, 5, 96)
    with torch.no_grad():
        want, got = linear(x), QuantizedLinear(linear.weight, linear.bias, form)(x)
    assert got.shape == want.shape
    relative = float((got - want).norm() / want.norm())
    assert relative < (0.03 if form == "int8" else 1e-3)


def test_auto_picks_a_fast_form_on_this_cpu_and_fp32_where_it_cannot():
    llama = _load("tiny-random-llama", "fp32").adapter
    assert resolve_form("auto", llama, "cpu", torch.float32) == ("fp16" if FAST_FORMS else "fp32")
    assert resolve_form("auto", llama, "cuda", torch.float32) == "fp32"
    assert resolve_form("auto", llama, "cpu", torch.bfloat16) == "fp32"
    assert resolve_form("fp32", llama, "cuda", torch.float32) == "fp32"
    # int8 only where the model's quality record says it passed
    assert resolve_form("auto", llama, "cpu", torch.float32, ("int8",)) == ("int8" if FAST_FORMS else "fp32")
    assert resolve_form("auto", llama, "cuda", torch.float32, ("int8",)) == "fp32"


@pytest.mark.parametrize("record, passing", [
    ({"int8": {"rouge_l_vs_fp32": {"python": 0.993, "java": 1.01}}}, ("int8",)),
    ({"int8": {"rouge_l_vs_fp32": {"python": 0.993, "java": 0.982}}}, ()),  # one language short
    ({"int8": {"rouge_l_vs_fp32": {}}}, ()),
    ({"int8": {"rouge_l": 1.0}}, ()),
    ({"int4": {"rouge_l_vs_fp32": {"python": 1.0}}}, ()),  # not a form
    ([1, 2], ()),
])
def test_a_quality_record_lets_auto_pick_only_forms_that_passed_in_every_language(tmp_path, record, passing):
    (tmp_path / QUALITY_RECORD).write_text(json.dumps(record))
    assert passing_forms(tmp_path) == passing


def test_a_missing_or_unreadable_quality_record_passes_nothing(tmp_path):
    assert passing_forms(None) == () and passing_forms(tmp_path) == ()
    (tmp_path / QUALITY_RECORD).write_bytes(b"\xff{not json")
    assert passing_forms(tmp_path) == ()


def test_the_shipped_default_records_int8_passing_the_quality_rule():
    from greencode.model.load import ASSETS

    record = json.loads((ASSETS / QUALITY_RECORD).read_text())
    assert passing_forms(ASSETS) == ("int8",)
    if "int8" in FAST_FORMS:
        assert load_model("default", device="cpu", weights="auto").weights == "int8"
    assert {"python", "java"} <= set(record["int8"]["rouge_l_vs_fp32"]) and "greencode train weights" in record["int8"]["command"]


@pytest.mark.parametrize("device, dtype, names", [("cuda", torch.float32, "not cuda"),
                                                  ("cpu", torch.bfloat16, "dtype = \"float32\"")])
def test_a_form_the_machine_cannot_run_is_one_line_naming_what_it_can(device, dtype, names):
    llama = _load("tiny-random-llama", "fp32").adapter
    with pytest.raises(GreencodeError) as error:
        resolve_form("int8", llama, device, dtype)
    message = str(error.value)
    assert "\n" not in message and names in message and "this machine can run: fp32" in message


@needs_fbgemm
def test_an_architecture_the_quantizer_does_not_support_is_one_line_and_fp32_still_works():
    with pytest.raises(GreencodeError, match="gpt2 architecture .* set \\[model\\].weights = \"fp32\""):
        _load("tiny-random-gpt2", "int8")
    auto = _load("tiny-random-gpt2", "auto")
    assert auto.weights == "fp32"
    summary = EarlyExitEngine(auto).complete(PROMPT, "full", max_new_tokens=4)
    assert summary.tokens == 4


def test_an_unknown_form_is_refused_by_the_config(tmp_path):
    path = tmp_path / "greencode.toml"
    path.write_text('[model]\nweights = "int3"\n')
    with pytest.raises(GreencodeError, match="weights.*int8"):
        load_config(path)


def test_info_says_which_form_was_chosen():
    config = load_config(None, {"model.spec": "tiny-random-llama", "model.device": "cpu"})
    facts = model_info(config)
    assert facts["weights"].startswith(("fp16" if FAST_FORMS else "fp32") + " (")
    assert "chosen by auto" in facts["weights"]


@needs_fbgemm
def test_shortlist_rows_take_the_heads_form_and_give_its_logits():
    from greencode.exits.shortlist import ShortlistHead

    loaded = _load("tiny-random-llama", "int8")
    head = loaded.model.get_output_embeddings()
    ids = torch.tensor([5, 900, 17, 3000])
    shortlist = ShortlistHead(head, ids, loaded.adapter.vocab_size)
    normed = torch.randn(1, 1, loaded.hidden_size)
    with torch.no_grad():
        # per-channel scales and one input scale per call: each row's logit is the full int8 head's
        assert torch.allclose(shortlist(normed), head(normed)[..., ids], atol=1e-5)
        assert not torch.allclose(shortlist(normed), torch.nn.functional.linear(normed, shortlist.weight), atol=1e-5)
