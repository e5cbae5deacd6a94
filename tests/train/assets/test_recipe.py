import json
import shutil

import pytest

from greencode.config import load_config
from greencode.errors import GreencodeError
from greencode.exits.maps import ExitMaps
from greencode.model.load import ASSETS, load_model, shipped_adaptation
from train.assets.recipe import MAX_ASSET_BYTES, Recipe, build_default, install

JAVA = """package demo.p{n};

import java.util.ArrayList;
import java.util.List;

/** A small list of numbers, number {n}. */
public class Numbers{n} {{
    private final List<Integer> values = new ArrayList<>();

    public void add(int value) {{
        if (value < 0) {{
            throw new IllegalArgumentException("negative: " + value);
        }}
        values.add(value * {n});
    }}

    public int sum() {{
        int total = 0;
        for (int value : values) {{
            total += value;
        }}
        return total;
    }}

    @Override
    public String toString() {{
        return "Numbers{n}" + values;
    }}
}}
"""


def two_language_corpus(root, java_files=12):
    """greencode's own Python sources plus small Java classes: a real two-language corpus."""
    shutil.copytree(ASSETS.parent, root / "py", ignore=shutil.ignore_patterns("assets", "__pycache__", "examples"))
    for n in range(java_files):
        (root / "java").mkdir(exist_ok=True)
        (root / "java" / f"Numbers{n}.java").write_text(JAVA.format(n=n))
    return root


def tiny_config(corpus):
    return load_config(overrides={"agent.n_steps": 64, "agent.batch_size": 32, "agent.n_epochs": 1,
                                  "data.corpus": str(corpus), "data.validation_fraction": 0.4,
                                  "data.test_fraction": 0.1})


TINY_RECIPE = Recipe(shortlist=2000, count_tokens=0, train_tokens=512, validation_tokens=128, seq_len=64,
                     kl_epochs=0.5, mlp_rank=4, mlp_epochs=0.5, trajectory_samples=3, tokens_per_sample=4,
                     trajectory_context=32, timesteps=128, knob_samples=8)


def test_the_recipe_builds_and_installs_on_a_tiny_model(tmp_path):
    config = tiny_config(two_language_corpus(tmp_path / "corpus"))
    output = tmp_path / "build"
    manifest = build_default(config, output, TINY_RECIPE, log=lambda line: None, spec="tiny-random-llama")
    assert manifest["exit_points"] == [4, 6, 10]
    agreement = manifest["adaptation"]["agreement"]
    assert set(agreement) == {"before", "least_squares", "kl", "mlp"}
    assert set(agreement["kl"]) == {"python", "java"} and set(agreement["kl"]["java"]) == {"full", "shortlist"}
    assert manifest["adaptation"]["chosen"] in agreement
    assert set(manifest["adaptation"]["agreement_after"]) == {"4", "6", "10"}  # what `greencode info` shows
    training = manifest["agent_training"]
    assert training["chosen"] in ("supervised", "teacher_forced", "ppo") and training["why"]
    assert set(training["held_out_trade_off"]) == set(training["teacher_forced_held_out"]["trade_off"]) \
        == {"supervised", "teacher_forced", "ppo"}
    assert training["teacher_forced"]["train_tokens"] == manifest["adaptation"]["train_tokens"]["python"] * 2
    assert manifest["adaptation"]["corpus_short_of_budget"] == "none"
    assert 0 < manifest["agent_training"]["decision_cost"]["share_of_full_depth_token"] < 0.05
    assert set(manifest["shortlist_report"]["held_out_coverage"]) == {"python", "java"}
    knob = manifest["knob"]  # agent:T's confirm bound and each T's meaning, on the validation split
    assert 0 <= knob["confirm"] <= 1 and set(knob["table"]["0.9"]) == {"python", "java"}
    assert any(line.startswith("java: the validation split has") for line in knob["calibration"]["short"])
    assets = tmp_path / "assets"
    install(output, assets)
    installed = json.loads((assets / "manifest.json").read_text())
    assert ExitMaps.load(assets / installed["exit_maps"], 64, exit_points=[4, 6, 10]).exit_points == [4, 6, 10]
    assert sorted(p.name for p in assets.iterdir()) == sorted(["manifest.json", installed["exit_maps"],
                                                                installed["agent"], installed["shortlist"]])


def test_a_corpus_without_java_is_one_clear_error_and_writes_nothing(tmp_path):
    corpus = two_language_corpus(tmp_path / "corpus", java_files=0)
    output = tmp_path / "build"
    with pytest.raises(GreencodeError, match="no java files"):
        build_default(tiny_config(corpus), output, TINY_RECIPE, log=lambda line: None, spec="tiny-random-llama")
    assert not output.exists()


def test_install_refuses_an_incomplete_build(tmp_path):
    with pytest.raises(GreencodeError, match="missing"):
        install(tmp_path, tmp_path / "assets")


def test_an_install_stopped_half_way_leaves_the_old_set_whole(tmp_path, monkeypatch):
    import train.assets.recipe as recipe

    old, new, assets = tmp_path / "old", tmp_path / "new", tmp_path / "assets"
    for build, text in ((old, "old"), (new, "new")):
        build.mkdir()
        for name in ("a.safetensors", "b.safetensors", "c.safetensors"):
            (build / name).write_text(f"{text} {name}")
        (build / "manifest.json").write_text(json.dumps({"exit_maps": "a.safetensors", "agent": "b.safetensors",
                                                          "shortlist": "c.safetensors", "build": text}))
    install(old, assets)
    calls = []

    def interrupted(path, write):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second file is being copied
        return real(path, write)

    real = recipe.atomic_write
    monkeypatch.setattr(recipe, "atomic_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        install(new, assets)
    manifest = json.loads((assets / "manifest.json").read_text())
    assert manifest["build"] == "old"
    for key in ("exit_maps", "agent", "shortlist"):
        assert (assets / manifest[key]).read_text().startswith("old")


def test_shipped_assets_fit_the_budget_and_the_default_model():
    manifest = shipped_adaptation()
    assert manifest, "greencode/assets/manifest.json must ship (greencode train default --install)"
    names = ["manifest.json", *(manifest[key] for key in ("exit_maps", "agent", "shortlist") if manifest.get(key))]
    assert sum((ASSETS / name).stat().st_size for name in names) <= MAX_ASSET_BYTES
    for key in ("base_model", "exit_points", "adaptation", "agent_training", "hardware", "seconds"):
        assert key in manifest


@pytest.mark.integration
def test_default_loads_with_the_shipped_adaptation_and_agent():
    from greencode.decoding.engine import EarlyExitEngine

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


@pytest.mark.integration
def test_the_first_completion_in_the_playground_exits_early_at_the_default_policy():
    """`./dev.sh play` opens greencode/examples/fibonacci.py and completes at the end of its last line."""
    from greencode.decoding.engine import EarlyExitEngine

    config = load_config(ASSETS.parents[1] / "greencode.toml")
    text = (ASSETS.parent / "examples" / "fibonacci.py").read_text().rstrip("\n")
    engine = EarlyExitEngine(load_model("default"))
    summary = engine.complete(text, config.engine.policy, max_new_tokens=config.engine.max_new_tokens, stop_at_eol=True)
    assert any(layer < engine.num_layers for layer in summary.exit_layers[1:])  # the first comes from the prefill


@pytest.mark.integration
def test_info_describes_the_shipped_default():
    from greencode.info import model_info

    facts = model_info(load_config(ASSETS.parents[1] / "greencode.toml"))
    assert set(facts["agreement_after"]) == {str(p) for p in shipped_adaptation()["exit_points"]}
    assert facts["agent"].endswith(".safetensors")
    knob = shipped_adaptation()["knob"]  # agent:T's calibrated confirm bound and what each T means
    assert facts["agent_policy"].startswith(f"agent:T = agent:T:{knob['confirm']:g}:{knob['ramp']} ")
    assert set(facts["knob_table"]) == set(knob["table"]) and facts["knob"].startswith("T=")
