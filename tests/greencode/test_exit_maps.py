import torch

from greencode.engine import EarlyExitEngine
from greencode.exit_maps import ExitMaps
from train.exit_maps import States, agreement, distill, fit_least_squares

PROMPT = "total = 0\nfor item in items:\n    total +="


def test_identity_maps_change_nothing(tiny_llama):
    maps = ExitMaps(64, [4, 6, 10])
    hidden = torch.randn(2, 3, 64)
    assert torch.allclose(maps(6, hidden), hidden)


def test_save_and_load_round_trip(tmp_path):
    maps = ExitMaps(64, [4, 6, 10])
    with torch.no_grad():
        maps.maps["6"].weight.mul_(0.5)
    path = maps.save(tmp_path / "maps.safetensors", "tiny")
    again = ExitMaps.load(path, 64)
    assert again.exit_points == [4, 6, 10]
    assert torch.allclose(again.maps["6"].weight, maps.maps["6"].weight, atol=1e-3)  # stored as float16


def test_engine_decodes_exits_through_the_maps(tiny_llama):
    plain = EarlyExitEngine(tiny_llama).complete(PROMPT, "fixed:6", max_new_tokens=5)
    maps = ExitMaps(64, [4, 6, 10])
    with torch.no_grad():
        maps.maps["6"].weight.copy_(torch.randn(64, 64))
    tiny_llama.adapter.exit_maps = maps
    try:
        mapped = EarlyExitEngine(tiny_llama).complete(PROMPT, "fixed:6", max_new_tokens=5)
        full = EarlyExitEngine(tiny_llama).complete(PROMPT, max_new_tokens=5)
    finally:
        tiny_llama.adapter.exit_maps = None
    assert mapped.events[0].token_id == plain.events[0].token_id  # the prefill token runs at full depth
    assert [e.token_id for e in mapped.events] != [e.token_id for e in plain.events]
    unmapped_full = EarlyExitEngine(tiny_llama).complete(PROMPT, max_new_tokens=5)
    assert full.text == unmapped_full.text  # full depth never touches the maps


def _states(layers, count=400, d=64, seed=0):
    """Synthetic states where the final state is a known affine function of each exit's state."""
    generator = torch.Generator().manual_seed(seed)
    final = torch.randn(count, d, generator=generator)
    exits = {}
    for layer in layers:
        mix = torch.randn(d, d, generator=generator) / d ** 0.5 + torch.eye(d)
        exits[layer] = (final - 0.3) @ torch.linalg.inv(mix).T
    return States(exits, final)


def test_least_squares_recovers_an_affine_relation_and_raises_agreement(tiny_llama):
    states = _states([4, 6, 10])
    maps = ExitMaps(64, [4, 6, 10])
    before = agreement(tiny_llama, states, maps)
    fit_least_squares(maps, states, ridge=1e-8)
    for layer in (4, 6, 10):
        assert torch.allclose(maps(layer, states.exits[layer]), states.final, atol=1e-3)
    after = agreement(tiny_llama, states, maps)
    assert all(after[layer] == 1.0 and after[layer] > before[layer] for layer in after)


def test_distillation_lowers_the_kl(tiny_llama):
    states = _states([4, 6], count=128)
    maps = ExitMaps(64, [4, 6])
    losses = distill(maps, tiny_llama, states, steps=25, batch=64, lr=3e-2)
    assert losses[-1] < 0.7 * losses[0]
