import json

import pytest
import torch

from greencode.decoding.engine import EarlyExitEngine
from greencode.errors import GreencodeError
from greencode.exits.maps import ExitMaps
from train.assets.calibration import CalibrationStates
from train.assets.exit_maps import ExitHead, agreement, distill, fit_least_squares

PROMPT = "total = 0\nfor item in items:\n    total +="


def test_identity_maps_change_nothing(tiny_llama):
    maps = ExitMaps(64, [4, 6, 10])
    hidden = torch.randn(2, 3, 64)
    assert torch.allclose(maps(6, hidden), hidden)
    maps.add_mlps(8)  # a fresh MLP is an exact no-op too
    assert torch.allclose(maps(6, hidden), hidden)


def test_save_and_load_round_trip_with_an_mlp(tmp_path):
    maps = ExitMaps(64, [4, 6, 10], normalize=True, mlp_rank=8)
    with torch.no_grad():
        maps.maps["6"].weight.mul_(0.5)
        maps.mlps["6"].up.weight.normal_()
    path = maps.save(tmp_path / "maps.safetensors", "tiny")
    again = ExitMaps.load(path, 64)
    assert again.exit_points == [4, 6, 10] and again.mlp_rank == 8
    hidden = torch.randn(5, 64)
    assert torch.allclose(again(6, hidden), maps(6, hidden), atol=2e-2)  # stored as float16


def test_a_version_1_file_still_loads(tmp_path):
    from safetensors.torch import save_file

    tensors = {f"{p}.{k}": (torch.eye(64) if k == "weight" else torch.zeros(64)).half() for p in (4, 6) for k in ("weight", "bias")}
    save_file(tensors, str(tmp_path / "v1.safetensors"), metadata={
        "format": "greencode-exit-maps/1", "hidden_size": "64", "exit_points": json.dumps([4, 6]),
        "base_model": "tiny", "normalize": "false"})
    maps = ExitMaps.load(tmp_path / "v1.safetensors", 64)
    assert maps.mlp_rank == 0 and maps.exit_points == [4, 6]


@pytest.mark.parametrize("bad", [{"hidden_size": None}, {"hidden_size": "wide"}, {"exit_points": "[4, 6"},
                                 {"mlp_rank": "many"}])
def test_damaged_metadata_is_one_clear_error(tmp_path, bad):
    from safetensors.torch import save_file

    metadata = {"format": "greencode-exit-maps/2", "hidden_size": "64", "exit_points": json.dumps([4]),
                "normalize": "false", "mlp_rank": "0"}
    metadata.update({key: value for key, value in bad.items() if value is not None})
    for key in (key for key, value in bad.items() if value is None):
        del metadata[key]
    tensors = {"4.weight": torch.eye(64).half(), "4.bias": torch.zeros(64).half()}
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(GreencodeError, match="bad.safetensors: damaged exit-maps metadata"):
        ExitMaps.load(tmp_path / "bad.safetensors", 64)


def test_maps_for_other_exit_points_or_another_width_are_one_clear_error(tmp_path):
    path = ExitMaps(64, [4, 6]).save(tmp_path / "maps.safetensors", "tiny")
    with pytest.raises(GreencodeError, match=r"maps.safetensors: exit maps are for exit points \[4, 6\]"):
        ExitMaps.load(path, 64, exit_points=[4, 6, 10])
    with pytest.raises(GreencodeError, match="maps.safetensors: exit maps are for hidden size 64"):
        ExitMaps.load(path, 32)


def test_maps_of_a_layout_this_engine_does_not_compute_are_one_line(tmp_path):
    """e.g. a context-aware adapter (a later format) reaching an engine that runs only the per-state maps."""
    from safetensors.torch import save_file

    tensors = {"4.weight": torch.eye(64).half(), "4.bias": torch.zeros(64).half(), "4.attn.q": torch.zeros(8, 64).half()}
    save_file(tensors, str(tmp_path / "ctx.safetensors"), metadata={
        "format": "greencode-exit-maps/3", "hidden_size": "64", "exit_points": "[4]", "normalize": "true"})
    with pytest.raises(GreencodeError, match="ctx.safetensors: exit maps in format 'greencode-exit-maps/3'; this "
                                             "engine computes greencode-exit-maps/1, greencode-exit-maps/2") as info:
        ExitMaps.load(tmp_path / "ctx.safetensors", 64)
    assert "\n" not in str(info.value)
    save_file(tensors, str(tmp_path / "extra.safetensors"), metadata={  # today's format with tensors it never reads
        "format": "greencode-exit-maps/2", "hidden_size": "64", "exit_points": "[4]", "normalize": "true"})
    with pytest.raises(GreencodeError, match="extra.safetensors: damaged exit maps"):
        ExitMaps.load(tmp_path / "extra.safetensors", 64)


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


def _states(adapter, layers, count=400, d=64, seed=0, top_k=16):
    """Synthetic states where the final state is a known affine function of each exit's state."""
    generator = torch.Generator().manual_seed(seed)
    final = torch.randn(count, d, generator=generator) * 3
    exits = {}
    for layer in layers:
        mix = torch.randn(d, d, generator=generator) / d ** 0.5 + torch.eye(d)
        exits[layer] = ((final - 0.3) @ torch.linalg.inv(mix).T).half()
    top = torch.log_softmax(adapter.logits(final).float(), -1).topk(top_k, -1)
    return CalibrationStates(exits, final.half(), top.indices, top.values, torch.zeros(count, dtype=torch.long))


def test_least_squares_recovers_an_affine_relation_and_raises_agreement(tiny_llama):
    states = _states(tiny_llama.adapter, [4, 6, 10])
    head = ExitHead(tiny_llama.adapter)
    maps = ExitMaps(64, [4, 6, 10])
    before = agreement(head, states, maps)
    fit_least_squares(maps, states, ridge=1e-8)
    for layer in (4, 6, 10):
        error = (maps(layer, states.exits[layer].float()) - states.final.float()).abs().max()
        assert error < 0.02 * states.final.float().abs().max()  # up to the float16 states' rounding
    after = agreement(head, states, maps)
    assert all(after[layer] > 0.95 and after[layer] > before[layer] for layer in after)


def test_a_final_token_outside_the_shortlist_is_a_disagreement(tiny_llama):
    states = _states(tiny_llama.adapter, [4])
    states.exits[4] = states.final.clone()  # the exit already is the final state: full head agrees everywhere
    assert agreement(ExitHead(tiny_llama.adapter), states, None)[4] == 1.0
    finals = states.final_top1.unique()
    keep = torch.tensor([t for t in range(tiny_llama.adapter.vocab_size) if t != int(finals[0])])
    share = float((states.final_top1 == finals[0]).float().mean())
    assert agreement(ExitHead(tiny_llama.adapter, keep), states, None)[4] <= round(1 - share, 4)


def test_kl_through_the_shortlist_lowers_the_loss_with_and_without_an_mlp(tiny_llama):
    states = _states(tiny_llama.adapter, [4, 6], count=256)
    head = ExitHead(tiny_llama.adapter, torch.arange(0, 4000))
    maps = ExitMaps(64, [4, 6])
    losses = distill(maps, head, states, epochs=8, batch=64, lr=3e-2, log=lambda line: None)
    assert losses[-1] < 0.8 * losses[0]
    maps.add_mlps(8)
    more = distill(maps, head, states, epochs=4, batch=64, lr=1e-2, log=lambda line: None)
    assert more[-1] < losses[0]


def test_the_fast_top1_is_float32_decoding_s_argmax(tiny_llama):
    hidden = torch.randn(500, 64) * 4
    for ids in (None, torch.arange(100, 3000)):
        head = ExitHead(tiny_llama.adapter, ids)
        exact = head.logits(hidden).argmax(-1)
        assert torch.equal(head.top1(hidden), exact if ids is None else ids[exact])
