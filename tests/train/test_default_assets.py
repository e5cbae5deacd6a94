import json

import pytest

from greencode.config import load_config
from greencode.errors import GreencodeError
from greencode.exit_maps import ExitMaps
from greencode.models import ASSETS, load_model, shipped_adaptation
from train.default_assets import MAX_ASSET_BYTES, build_default, install


def test_the_recipe_builds_and_installs_on_a_tiny_model(tmp_path):
    corpus = str(ASSETS.parent)  # greencode's own sources: small, real Python
    config = load_config(overrides={"agent.n_steps": 64, "agent.batch_size": 32, "agent.n_epochs": 1,
                                    "data.corpus": corpus, "data.validation_fraction": 0.3})
    output = tmp_path / "build"
    manifest = build_default(config, output, train_tokens=1024, validation_tokens=512, distill_steps=2,
                             samples=3, timesteps=128, log=lambda line: None, spec="tiny-random-llama")
    assert manifest["exit_points"] == [4, 6, 10]
    assert set(manifest["adaptation"]["agreement_after"]) == {4, 6, 10}
    assert manifest["agent_training"]["method"].startswith("supervised")
    assert set(manifest["agent_training"]["exit_rate_by_threshold"]) >= {"0.6", "0.9"}
    assets = tmp_path / "assets"
    written = install(output, assets)
    assert sorted(p.name for p in written) == ["agent.safetensors", "exit_maps.safetensors", "manifest.json"]
    assert json.loads((assets / "manifest.json").read_text())["exit_maps"] == "exit_maps.safetensors"
    assert ExitMaps.load(assets / "exit_maps.safetensors", 64).exit_points == [4, 6, 10]


def test_install_refuses_an_incomplete_build(tmp_path):
    with pytest.raises(GreencodeError, match="missing"):
        install(tmp_path, tmp_path / "assets")


def test_shipped_assets_fit_the_budget_and_the_default_model():
    manifest = shipped_adaptation()
    assert manifest, "greencode/assets/manifest.json must ship (greencode train default --install)"
    total = sum((ASSETS / name).stat().st_size for name in ("manifest.json", manifest["exit_maps"], manifest["agent"]))
    assert total <= MAX_ASSET_BYTES
    for key in ("base_model", "exit_points", "adaptation", "agent_training", "hardware", "seconds"):
        assert key in manifest


@pytest.mark.integration
def test_default_loads_with_the_shipped_adaptation_and_agent():
    from greencode.engine import EarlyExitEngine

    loaded = load_model("default")
    manifest = shipped_adaptation()
    assert loaded.adapter.exit_maps is not None
    assert loaded.adapter.exit_maps.exit_points == manifest["exit_points"] == loaded.info["exit_points"]
    engine = EarlyExitEngine(loaded)  # the shipped agent loads for the default's exit layout
    assert engine.exit_points == manifest["exit_points"]
    summary = engine.complete("def add(a, b):\n    return", "agent:0.5", max_new_tokens=4)
    assert summary.tokens == 4
    base = load_model("default-base")
    assert base.adapter.exit_maps is None and "agent_path" not in base.info
