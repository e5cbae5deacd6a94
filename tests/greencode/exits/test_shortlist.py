import pytest
import torch

from greencode.errors import GreencodeError
from greencode.exits.shortlist import (ShortlistHead, check_shortlist, load_shortlist, most_frequent, save_shortlist,
                                 tokenizer_fingerprint)
from tests.cli import run_cli


def counts_from_code(tokenizer, text: str) -> torch.Tensor:
    """Token counts of some code, the way a shortlist is built from a corpus."""
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
    return torch.bincount(ids, minlength=len(tokenizer))


CODE = "def f(x):\n    return x + 1\n\nfor i in range(10):\n    print(f(i))\n" * 3


def test_most_frequent_orders_by_count_and_drops_unseen():
    counts = torch.tensor([0, 5, 2, 5, 0, 9])
    assert most_frequent(counts, 10).tolist() == [5, 1, 3, 2]
    assert most_frequent(counts, 2).tolist() == [5, 1]


def test_round_trip_keeps_order(tmp_path, tiny_llama):
    tokenizer = tiny_llama.tokenizer
    ids = most_frequent(counts_from_code(tokenizer, CODE), 20)
    path = save_shortlist(tmp_path / "shortlist.safetensors", ids, tokenizer, source="test")
    assert torch.equal(load_shortlist(path, tokenizer), ids)
    assert not list(tmp_path.glob(".*partial*"))


def _write_raw(path, ids, metadata):
    from safetensors.torch import save_file

    save_file({"ids": torch.as_tensor(ids, dtype=torch.int64)}, str(path), metadata=metadata)
    return path


def _metadata(tokenizer):
    return {"format": "greencode-shortlist/1", "vocab_size": str(len(tokenizer)),
            "tokenizer": tokenizer_fingerprint(tokenizer), "source": "test"}


@pytest.mark.parametrize("ids, message", [
    ([], "empty"),
    ([1, 2, 10**7], "outside the vocabulary"),
    ([-1, 2], "outside the vocabulary"),
    ([5, 6, 5], "repeats"),
])
def test_bad_shortlists_are_refused_naming_the_file(tmp_path, tiny_llama, ids, message):
    path = _write_raw(tmp_path / "bad.safetensors", ids, _metadata(tiny_llama.tokenizer))
    with pytest.raises(GreencodeError, match=message) as info:
        load_shortlist(path, tiny_llama.tokenizer)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_shortlist_of_another_tokenizer_is_refused(tmp_path, tiny_llama):
    metadata = _metadata(tiny_llama.tokenizer) | {"tokenizer": "0" * 64}
    path = _write_raw(tmp_path / "other.safetensors", [1, 2, 3], metadata)
    with pytest.raises(GreencodeError, match="another tokenizer"):
        load_shortlist(path, tiny_llama.tokenizer)


def test_not_a_shortlist_is_refused(tmp_path, tiny_llama):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(GreencodeError, match="junk.safetensors"):
        load_shortlist(path, tiny_llama.tokenizer)


def test_save_refuses_a_bad_shortlist_and_writes_nothing(tmp_path, tiny_llama):
    with pytest.raises(GreencodeError, match="empty"):
        save_shortlist(tmp_path / "s.safetensors", torch.tensor([], dtype=torch.int64), tiny_llama.tokenizer)
    assert not list(tmp_path.iterdir())


def test_check_shortlist_refuses_floats():
    with pytest.raises(GreencodeError, match="1-D tensor of token ids"):
        check_shortlist(torch.tensor([1.0, 2.0]), 10, "x")


def test_head_gives_the_shortlist_rows_of_the_full_head(tiny_model):
    adapter = tiny_model.adapter
    lm_head = adapter.model.get_output_embeddings()
    ids = torch.tensor([7, 3, 100, 42])
    head = ShortlistHead(lm_head, ids, lm_head.weight.shape[0])
    normed = torch.randn(1, 1, adapter.hidden_size)
    assert head.weight.is_contiguous() and head.weight.shape == (4, lm_head.weight.shape[1])
    assert torch.allclose(head(normed), lm_head(normed)[..., ids], atol=1e-5)
    assert head.token(2) == 100


# -- the engine decodes exits over the shortlist ---------------------------------------------------

def stdlib_shortlist(tokenizer, k: int = 400) -> torch.Tensor:
    """A shortlist built as the recipe builds one: the most frequent tokens of real code (here one stdlib module)."""
    import inspect
    import json

    return most_frequent(counts_from_code(tokenizer, inspect.getsource(json.decoder)), k)


def with_shortlist(loaded, ids):
    import dataclasses

    return dataclasses.replace(loaded, info={**loaded.info, "shortlist": ids})


def test_fixed_exit_with_a_shortlist_equals_a_masked_reference(tiny_model):
    from greencode.decoding.engine import EarlyExitEngine
    from tests.greencode.decoding.test_engine import PROMPT, _reference_fixed

    ids = stdlib_shortlist(tiny_model.tokenizer)
    engine = EarlyExitEngine(with_shortlist(tiny_model, ids))
    summary = engine.complete(PROMPT, "fixed:6", max_new_tokens=8)
    prompt_ids, _ = engine.encode(PROMPT, 8)
    tokens, _ = _reference_fixed(tiny_model, prompt_ids, 6, 8, allowed=ids)
    assert [e.token_id for e in summary.events] == tokens
    assert set(tokens[1:]) <= set(ids.tolist())
    unrestricted = EarlyExitEngine(tiny_model).complete(PROMPT, "fixed:6", max_new_tokens=8)
    assert [e.token_id for e in unrestricted.events] != tokens  # the shortlist made a difference here


def test_full_depth_ignores_the_shortlist(tiny_llama):
    from greencode.decoding.engine import EarlyExitEngine
    from tests.greencode.decoding.test_engine import PROMPT, _hf_greedy

    engine = EarlyExitEngine(with_shortlist(tiny_llama, stdlib_shortlist(tiny_llama.tokenizer)))
    assert [e.token_id for e in engine.complete(PROMPT, max_new_tokens=8).events] == _hf_greedy(tiny_llama, PROMPT, 8)


def test_confidence_and_sampling_stay_inside_the_shortlist(tiny_llama):
    from greencode.decoding.engine import EarlyExitEngine
    from tests.greencode.decoding.test_engine import PROMPT

    ids = stdlib_shortlist(tiny_llama.tokenizer, 50)
    engine = EarlyExitEngine(with_shortlist(tiny_llama, ids))
    summary = engine.complete(PROMPT, "confidence:0.0", max_new_tokens=8, temperature=1.5, seed=3)
    assert summary.exit_layers[1:] == [engine.exit_points[0]] * 7
    assert set(e.token_id for e in summary.events[1:]) <= set(ids.tolist())


def test_record_mode_traces_the_shortlist_top1(tiny_llama):
    from greencode.decoding.engine import EarlyExitEngine
    from tests.greencode.decoding.test_engine import PROMPT

    ids = stdlib_shortlist(tiny_llama.tokenizer, 50)
    loaded = with_shortlist(tiny_llama, ids)
    summary = EarlyExitEngine(loaded).complete(PROMPT, max_new_tokens=4, record=True)
    for event in summary.events:
        assert set(event.trace.exit_top1) <= set(ids.tolist())
    # what fixed:4 emits after the prefill is what the trace says decoding would emit at 4 (the agent's labels)
    fixed = EarlyExitEngine(loaded).complete(PROMPT, "fixed:4", max_new_tokens=2)
    assert summary.events[1].trace.exit_top1[0] == fixed.events[1].token_id


def test_cost_model_counts_the_shortlist_rows(tiny_llama):
    from greencode.decoding.engine import EarlyExitEngine

    whole = EarlyExitEngine(tiny_llama).cost
    engine = EarlyExitEngine(with_shortlist(tiny_llama, stdlib_shortlist(tiny_llama.tokenizer, 400)))
    vocab = tiny_llama.adapter.vocab_size
    assert engine.cost.head_units == pytest.approx(whole.head_units)  # full depth still pays the whole head
    assert engine.cost.exit_head_units == pytest.approx(whole.head_units * 400 / vocab)
    assert engine.cost.units(6, 1) < whole.units(6, 1)
    assert engine.cost.full_units == whole.full_units
    assert engine.describe_exit_head() == f"exit head: 400 of {vocab} tokens, {engine.cost.exit_head_units:.1f} layer-units"


def test_shortlist_size_picks_the_most_frequent_or_refuses(tiny_llama):
    from greencode.decoding.engine import EarlyExitEngine

    ids = stdlib_shortlist(tiny_llama.tokenizer, 400)
    loaded = with_shortlist(tiny_llama, ids)
    assert EarlyExitEngine(loaded, shortlist=0).exit_head is None
    assert EarlyExitEngine(loaded, shortlist=-1).exit_head.token_ids == ids.tolist()
    assert EarlyExitEngine(loaded, shortlist=10).exit_head.token_ids == ids[:10].tolist()
    with pytest.raises(GreencodeError, match="has 400 tokens"):
        EarlyExitEngine(loaded, shortlist=401)
    with pytest.raises(GreencodeError, match="ships no shortlist"):
        EarlyExitEngine(tiny_llama, shortlist=10)
    assert EarlyExitEngine(tiny_llama, shortlist=-1).exit_head is None


# -- the shipped shortlist is read with the model's adaptation ----------------------------------------

def _assets(tmp_path, loaded, shortlist_ids, metadata=None):
    """An assets folder for `loaded` as `greencode train default --install` writes it, with a shortlist."""
    from greencode.exits.maps import ExitMaps

    assets = tmp_path / "assets"
    assets.mkdir()
    ExitMaps(loaded.hidden_size, [4, 6, 10]).save(assets / "exit_maps.safetensors", "test")
    if metadata is None:
        save_shortlist(assets / "shortlist.safetensors", shortlist_ids, loaded.tokenizer)
    else:
        _write_raw(assets / "shortlist.safetensors", shortlist_ids, metadata)
    manifest = {"num_layers": loaded.num_layers, "hidden_size": loaded.hidden_size, "exit_points": [4, 6, 10],
                "exit_maps": "exit_maps.safetensors", "agent": "agent.safetensors", "shortlist": "shortlist.safetensors"}
    return assets, manifest


def test_the_manifest_shortlist_reaches_the_engine(tmp_path, tiny_llama):
    from greencode.decoding.engine import EarlyExitEngine
    from greencode.model.load import _apply_shipped_adaptation

    ids = stdlib_shortlist(tiny_llama.tokenizer, 100)
    assets, manifest = _assets(tmp_path, tiny_llama, ids)
    try:
        info = _apply_shipped_adaptation(tiny_llama.adapter, tiny_llama.tokenizer, manifest, assets)
    finally:
        tiny_llama.adapter.exit_maps = None  # the fixture is shared
    engine = EarlyExitEngine(with_shortlist(tiny_llama, info["shortlist"]))
    assert engine.exit_head.token_ids == ids.tolist()


@pytest.mark.parametrize("ids, metadata_change, message", [
    ([], {}, "empty"),
    ([3, 10**7], {}, "outside the vocabulary"),
    ([3, 4], {"tokenizer": "f" * 64}, "another tokenizer"),
])
def test_a_bad_shipped_shortlist_is_one_line_naming_it(tmp_path, tiny_llama, ids, metadata_change, message):
    from greencode.model.load import _apply_shipped_adaptation

    assets, manifest = _assets(tmp_path, tiny_llama, ids, _metadata(tiny_llama.tokenizer) | metadata_change)
    try:
        with pytest.raises(GreencodeError, match=message) as info:
            _apply_shipped_adaptation(tiny_llama.adapter, tiny_llama.tokenizer, manifest, assets)
    finally:
        tiny_llama.adapter.exit_maps = None
    assert str(assets / "shortlist.safetensors") in str(info.value)


def test_cli_exits_2_with_one_line_on_a_bad_shipped_shortlist(tmp_path, monkeypatch):
    """`greencode info` on the default model whose assets hold a shortlist of out-of-vocabulary ids."""
    import json
    import shutil

    from greencode.model.load import ASSETS

    assets = tmp_path / "assets"
    shutil.copytree(ASSETS, assets)
    manifest = json.loads((assets / "manifest.json").read_text())
    manifest["shortlist"] = "shortlist.safetensors"
    (assets / "manifest.json").write_text(json.dumps(manifest))
    _write_raw(assets / "shortlist.safetensors", [1, 2, 10**7],
               {"format": "greencode-shortlist/1", "vocab_size": "49152", "tokenizer": "x", "source": "test"})
    monkeypatch.setattr("greencode.model.load.ASSETS", assets)
    result = run_cli("info", "--model", "default")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("greencode: error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert str(assets / "shortlist.safetensors") in errors[0] and "another tokenizer" in errors[0]
