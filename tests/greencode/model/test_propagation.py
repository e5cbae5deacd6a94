"""Batched state propagation (greencode.model.lean.StackedKV) against the layer-by-layer reference, and the
cache it writes into."""

import pytest
import torch

from greencode.model.adapters import ArchAdapter
from greencode.model.kv_cache import StaticKVCache


def _load(weights):
    """tiny-random-llama in `weights`, its input norms made unequal first (they start at 1, which would hide a
    norm weight folded into the wrong rows)."""
    from greencode.model.load import load_model
    from greencode.model.weights import apply_weights

    loaded = load_model("tiny-random-llama", device="cpu")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in loaded.adapter.layers:
            layer.input_layernorm.weight.uniform_(0.5, 1.5, generator=generator)
    apply_weights(loaded.adapter, weights, "cpu", torch.float32)
    return loaded


@pytest.mark.parametrize("weights", ["fp32", "fp16", "int8"])
def test_stacked_propagation_matches_layer_by_layer(weights):
    loaded = _load(weights)
    adapter, L = loaded.adapter, loaded.num_layers
    assert adapter.lean is not None
    exit_points = [2, L // 2, L - 1]
    stacked = adapter.propagation(exit_points)
    reference = ArchAdapter.propagation(adapter, exit_points)  # one adapter.kv call per layer
    torch.manual_seed(0)
    hidden = torch.randn(1, 1, adapter.hidden_size)
    context = adapter.step_context(hidden, 7)
    # fp32 folds the norm into the rows in float; fp16 and int8 round the folded rows once more
    tolerance = {"fp32": 1e-5, "fp16": 2e-3, "int8": 5e-2}[weights]
    for start in [*exit_points, 1, L]:  # boundaries, a start inside a run, and nothing skipped
        want, got = StaticKVCache(L, 4), StaticKVCache(L, 4)
        with torch.inference_mode():
            for cache in (want, got):  # every layer already holds a position, so the new one goes second
                filler = adapter.kv(0, torch.ones(1, 1, adapter.hidden_size), adapter.step_context(hidden, 6))
                for index in range(L):
                    cache.update(*filler, index)
            reference(start, hidden, context, want)
            stacked(start, hidden, context, got)
        for index in range(L):
            assert got.get_seq_length(index) == want.get_seq_length(index) == (2 if index >= start else 1)
            scale = want.layers[index].keys.abs().max()
            assert torch.allclose(got.layers[index].keys, want.layers[index].keys, atol=tolerance * scale)
            assert torch.allclose(got.layers[index].values, want.layers[index].values,
                                  atol=tolerance * want.layers[index].values.abs().max())


def test_step_context_table_is_the_per_step_rotary_bit_for_bit():
    adapter = _load("fp32").adapter
    hidden = torch.zeros(1, 1, adapter.hidden_size)
    for position in (0, 5, 511, 512, 1500):  # across the table's growth
        want = adapter.layer_context(hidden, torch.tensor([[position]]))
        got = adapter.step_context(hidden, position)
        for a, b in zip([*want["position_embeddings"], *want["rotary"]], [*got["position_embeddings"], *got["rotary"]]):
            assert torch.equal(a, b)


def test_cache_writes_a_range_of_layers_and_grows():
    cache = StaticKVCache(4, 2)
    for index in range(4):
        cache.update(torch.full((1, 2, 2, 3), float(index)), torch.full((1, 2, 2, 3), -float(index)), index)
    cache.update_range(1, torch.full((3, 1, 2, 1, 3), 9.0), torch.full((3, 1, 2, 1, 3), -9.0))  # past capacity 2
    assert [cache.get_seq_length(i) for i in range(4)] == [2, 3, 3, 3]
    assert cache.buffer_keys.shape[3] >= 3
    for index in range(1, 4):
        assert torch.equal(cache.layers[index].keys[:, :, :2], torch.full((1, 2, 2, 3), float(index)))
        assert torch.equal(cache.layers[index].keys[:, :, 2:], torch.full((1, 2, 1, 3), 9.0))
        assert torch.equal(cache.layers[index].values[:, :, 2:], torch.full((1, 2, 1, 3), -9.0))
    assert torch.equal(cache.layers[0].keys, torch.zeros(1, 2, 2, 3))
