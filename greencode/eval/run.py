"""`greencode eval`: quality and efficiency of exit policies on identical samples (paper VI-C, Figs. 8-11).

Contestants: the base model at full depth (when the evaluated model is a fine-tuned directory whose
greencode.json names its base), the evaluated model at full depth, the peer policies ([eval].policies:
fixed:N, confidence:P, ...) and the RL agent at each threshold (agent:T). Every contestant completes
every sample; per sample the order rotates, so machine noise (other processes, thermal drift) hits
them alike. Each finished completion is stored at once (greencode.eval.store), so an interrupted run
resumes where it stopped.

The prefill is the same for every contestant on a sample: it runs once per sample and model, and every
policy decodes from a copy of its cache (EarlyExitEngine.prefill), each charged the same prefill. Its
time and energy are reported apart (`prefill_seconds`, `decode_joules`) so the policies' differences
are not hidden under it.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from greencode.errors import GreencodeError
from greencode.decoding.events import Figures
from greencode.decoding.step import measured_over_modelled
from greencode.eval.samples import EvalSample, SampleSet, load_samples, read_corpus
from greencode.eval.store import CompletionStore, file_stamp
from greencode.exits.oracle import Oracle, oracle_share

VERSIONED = ("greencode", "torch", "transformers", "codebleu", "tree-sitter", "tree-sitter-python",
             "tree-sitter-java", "rouge-score", "sacrebleu", "rapidfuzz", "zeus-ml")


@dataclass
class Contestant:
    name: str  # the row's policy: "base", "full", "fixed:14", "agent:0.9", ...
    label: str  # what plots call it
    engine: object  # EarlyExitEngine
    policy: object  # ExitPolicy
    identity: str  # what a stored completion must match to be reused
    model: str


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def find_agent(config, loaded, explicit: str | None) -> tuple[str | None, str | None, bool]:
    """(agent file, why there is none, named by the user?): --agent, [agent].path, the model's own agent,
    else the one `greencode train agent` writes to [agent].output."""
    if explicit or config.agent.path:
        return explicit or config.agent.path, None, True  # named by the user: a broken file is an error
    shipped = loaded.info.get("agent_path")
    if shipped:
        return shipped, None, False
    trained = Path(config.agent.output) / "agent.safetensors"
    if trained.is_file():
        return str(trained), None, False
    return None, (f"no agent file (none given with --agent or [agent].path, none shipped with the model, "
                  f"none at {trained}); train one with `greencode train agent`"), False


def build_contestants(config, loaded, base, meter, agent: tuple[str | None, str | None, bool],
                      thresholds: list[float]) -> tuple[list[Contestant], list[str]]:
    from greencode.exits.policies import check_side_by_side
    from greencode.runtime import engine_from_config

    agent_path, agent_missing, agent_named = agent
    notes: list[str] = []
    engine = engine_from_config(config, loaded, agent_path=agent_path or "", meter=meter,
                                max_context_tokens=config.eval.max_context_tokens)
    points = engine.exit_points
    stamp = file_stamp(loaded.spec)
    contestants: list[Contestant] = []
    if base is not None:
        base_engine = engine_from_config(config, base, agent_path="", exit_points=points, meter=meter,
                                         max_context_tokens=config.eval.max_context_tokens, shortlist=-1)
        contestants.append(Contestant("base", "base (full)", base_engine, base_engine.make_policy("full"),
                                      f"base|{base.spec}|{file_stamp(base.spec)}|full", base.name))
    names = list(config.eval.policies) + [f"agent:{t:g}" for t in thresholds]
    skipped_agents = []
    for text in names:
        if text.startswith("agent:") and agent_path is None:
            skipped_agents.append(text)
            continue
        try:
            policy = engine.make_policy(text)  # a bad policy or a mismatched agent fails here, before any work
        except GreencodeError as exc:
            if not text.startswith("agent:") or agent_named:
                raise
            agent_path, agent_missing = None, str(exc)  # a stale agent found in the default place: skip it
            skipped_agents.append(text)
            continue
        if any(c.name == policy.name for c in contestants):
            continue
        identity = f"{loaded.spec}|{stamp}|{policy.name}"
        if policy.name.startswith("agent:"):
            # agent:T's name hides the calibrated C and R it defaults to: a stored completion must match them too
            identity += f"|{agent_path}|{file_stamp(agent_path)}|C={policy.confirm:g}|R={policy.ramp}"
        label = policy.name
        if policy.name == "full":
            label = "fine-tuned (full)" if base is not None else "full"
        elif policy.name.startswith("agent:"):
            label = f"GC({policy.name.split(':', 1)[1]})"
        elif policy.name == "oracle":
            label = "oracle (modelled)"
        contestants.append(Contestant(policy.name, label, engine, policy, identity, loaded.name))
    if skipped_agents:
        notes.append(f"skipped {', '.join(skipped_agents)}: {agent_missing}")
        check_side_by_side([c.name for c in contestants], skipped=notes[-1])
    return contestants, notes


def _complete(contestant: Contestant, sample: EvalSample, config, line_protocol: bool,
              prefills: dict | None = None) -> dict:
    """One completion. `prefills` (engine id -> Prefilled) shares each sample's prefill between the
    contestants of one engine: the prompt runs through the layers once, every policy decodes from a copy
    of its cache, and each is charged the same prefill seconds and joules."""
    engine = contestant.engine
    prefilled = None
    if prefills is not None:
        if id(engine) not in prefills:
            prefills[id(engine)] = engine.prefill(sample.context_ids, config.eval.max_new_tokens)
        prefilled = prefills[id(engine)]
    summary = engine.complete(sample.context_ids, contestant.policy, max_new_tokens=config.eval.max_new_tokens,
                              stop_at_eol=line_protocol, prefilled=prefilled)
    return {
        "key": sample.key, "identity": contestant.identity, "policy": contestant.name,
        "prediction": summary.text, "tokens": summary.tokens, "exit_layers": summary.exit_layers,
        "prefill_seconds": summary.prefill_seconds, "seconds": summary.seconds, "joules": summary.joules,
        "decode_joules": sum(e.joules for e in summary.events[1:]),  # the first token comes with the prefill
        "modelled_units": sum(e.modelled_units for e in summary.events[1:]),  # CostModel layer-units
        "full_depth_joules": summary.full_depth_joules, "energy_source": summary.energy_source,
        "stop_reason": summary.stop_reason,
    }


def _exit_decisions(exit_layers: list[int], exit_points: list[int], num_layers: int) -> int:
    """How many times a policy was asked, for decoded tokens (the first token comes from the prefill)."""
    asks = [p for p in exit_points if p < num_layers]
    return sum(sum(1 for p in asks if p <= layer) for layer in exit_layers[1:])


def _quality(records: list[dict], samples: list[EvalSample], line_protocol: bool) -> dict:
    from greencode.eval.metrics import Sample, code_tokens, corpus_scores

    def normal(text: str) -> str:  # CodeXGLUE ground truth is space-separated tokens: compare like with like
        return " ".join(code_tokens(text)) if line_protocol else text

    # Syntax validity reads the prediction after its context (a CodeXGLUE input stops mid-line, before a space).
    gap = " " if line_protocol else ""
    scored = [Sample(normal(r["prediction"]), normal(s.reference), s.language, s.context + gap)
              for r, s in zip(records, samples)]
    return corpus_scores(scored)


def policy_row(contestant: Contestant, records: list[dict], samples: list[EvalSample], line_protocol: bool) -> dict:
    engine = contestant.engine
    L = engine.num_layers
    figures = Figures(L)
    for r in records:
        figures.add_completion(r["tokens"], r["seconds"], r["joules"], r["full_depth_joules"], r["exit_layers"],
                               r["energy_source"])
    decode_tokens = figures.decode_tokens
    quality = _quality(records, samples, line_protocol)
    n = len(records)
    row = {
        "policy": contestant.name, "label": contestant.label, "model": contestant.model, "samples": n,
        **{k: quality.get(k) for k in ("rougeL", "bleu", "codebleu", "ngram_match", "weighted_ngram_match",
                                       "syntax_match", "dataflow_match", "exact_match", "edit_sim",
                                       "syntax_valid")},
        "mean_exit_layer": figures.mean_exit_layer,
        "layers_skipped_frac": figures.layers_skipped_frac,
        "seconds_per_completion": statistics.fmean(r["prefill_seconds"] + r["seconds"] for r in records),
        "prefill_seconds": statistics.fmean(r["prefill_seconds"] for r in records),
        "tokens_per_s": figures.tokens_per_s,
        "joules": statistics.fmean(r["joules"] for r in records),
        "decode_joules": statistics.fmean(r["decode_joules"] for r in records),
        "energy_source": records[0]["energy_source"],
        "tokens_per_completion": statistics.fmean(r["tokens"] for r in records),
        "quality_notes": quality.get("notes", []),
    }
    asked = contestant.policy.name not in ("full", "oracle") and decode_tokens  # the oracle asks no one
    row["exit_decisions_per_token"] = (sum(_exit_decisions(r["exit_layers"], engine.exit_points, L) for r in records)
                                       / decode_tokens if asked else 0.0)
    modelled = [r.get("modelled_units") for r in records]  # absent in completions stored before the cost model
    if decode_tokens and None not in modelled and sum(modelled) > 0:
        row["modelled_speedup"] = engine.cost.full_units * decode_tokens / sum(modelled)
    if isinstance(contestant.policy, Oracle):  # it runs full depth: its timings and joules say nothing of its exits
        for key in MEASURED_KEYS:
            row[key] = None
    return row


MEASURED_KEYS = ("seconds_per_completion", "prefill_seconds", "tokens_per_s", "joules", "decode_joules")


def _oracle_shares(rows: list[dict]) -> None:
    """Each early-exit row's share of the oracle's modelled saving, and its regret (1 - that share)."""
    oracle = next((r for r in rows if r["policy"] == "oracle"), None)
    for row in rows:
        if oracle is None or row["policy"] in ("full", "base", "oracle"):
            continue
        share = oracle_share(row.get("modelled_speedup"), oracle.get("modelled_speedup"))
        row["oracle_saving_share"] = share
        row["regret"] = 1 - share if share is not None else None


def _agent_overheads(rows: list[dict], contestants: list[Contestant]) -> None:
    """Agent rows: seconds per decision on a real-sized state, and its share of a decoded token's time."""
    from greencode.eval.bench import agent_decision_cost

    by_name = {c.name: c for c in contestants}
    cost = None
    for row in rows:
        if not row["policy"].startswith("agent:"):
            continue
        if cost is None:
            contestant = by_name[row["policy"]]
            cost = agent_decision_cost(contestant.engine, contestant.policy)["decision_seconds"]
        row["agent_decision_seconds"] = cost
        per_token = 1 / row["tokens_per_s"] if row["tokens_per_s"] else 0.0
        row["agent_overhead_frac"] = row["exit_decisions_per_token"] * cost / per_token if per_token else None


def _relative(rows: list[dict]) -> None:
    """Energy and time against the evaluated model at full depth, measured in this same run."""
    full = next((r for r in rows if r["policy"] == "full"), None)

    def ratio(row: dict, key: str) -> float | None:
        return row[key] / full[key] if row[key] is not None and full[key] else None

    for row in rows:
        if full is None:
            break
        row["decode_joules_vs_full"] = ratio(row, "decode_joules")
        row["seconds_vs_full"] = ratio(row, "seconds_per_completion")
        row["tokens_per_s_vs_full"] = ratio(row, "tokens_per_s")
        if row["policy"] not in ("full", "base", "oracle"):  # the share of its modelled speed-up the clock delivered
            row["measured_over_modelled"] = measured_over_modelled(row["tokens_per_s_vs_full"],
                                                                   row.get("modelled_speedup"))


def summarise(contestants: list[Contestant], sample_set: SampleSet, store: CompletionStore) -> tuple[list[dict], int]:
    """Rows over the samples every contestant has finished (identical samples for all), and their count."""
    done = [s for s in sample_set.samples if all(store.get(s.key, c.identity) for c in contestants)]
    if not done:
        return [], 0
    line_protocol = sample_set.protocol == "line"
    rows = [policy_row(c, [store.get(s.key, c.identity) for s in done], done, line_protocol) for c in contestants]
    _relative(rows)
    _oracle_shares(rows)
    _agent_overheads(rows, contestants)
    return rows, len(done)


def _calibration(config) -> dict | None:
    """What the model's calibration read (the shipped default's manifest), for [eval].split = all."""
    from greencode.eval.holdout import calibration_of
    from greencode.model.load import shipped_adaptation

    return calibration_of(shipped_adaptation(), config.data) if config.model.spec == "default" else None


def run_eval(config, out: str | Path | None = None, agent: str | None = None, restart: bool = False,
             progress=None, echo=print, plots: bool = True) -> dict:
    """Run the evaluation `config` describes; write results.json, results.md and (with `plots`) plots into `out`."""
    import torch

    from greencode.energy import EnergyMeter
    from greencode.eval.plots import write_plots
    from greencode.runtime import load_from_config
    from greencode.eval.report import write_results

    from greencode.exits.policies import check_side_by_side
    from greencode.files.paths import check_writable

    out = Path(out or config.eval.out)
    check_side_by_side(list(config.eval.policies), agents=len(config.eval.thresholds))  # before any work
    check_writable(out, "--out")
    started = time.perf_counter()
    corpus = read_corpus(config, _calibration(config))
    loaded = load_from_config(config)
    base_spec = loaded.info.get("base_model")
    base = load_from_config(config, base_spec) if base_spec else None
    sample_set = load_samples(config, loaded.tokenizer, corpus)
    notes = list(sample_set.notes) + ([loaded.weights_note] if loaded.weights_note else [])
    meter = EnergyMeter(config.energy)
    contestants, more = build_contestants(config, loaded, base, meter, find_agent(config, loaded, agent),
                                          list(config.eval.thresholds))
    notes += more
    for note in notes:
        echo(f"note: {note}")
    fingerprint = {
        "protocol": sample_set.protocol, "model": loaded.spec, "model_stamp": file_stamp(loaded.spec),
        "base_model": base_spec, "data": dataclasses.asdict(config.data), "dtype": config.model.dtype,
        "weights": loaded.weights,  # completions in another weight form are other completions
        "context_fraction": config.eval.context_fraction, "max_context_tokens": config.eval.max_context_tokens,
        "max_new_tokens": config.eval.max_new_tokens, "exit_points": contestants[0].engine.exit_points,
        "exit_head": contestants[-1].engine.describe_exit_head(),  # the shortlist changes what exits emit
        # Timings from another device or thread count are not comparable with these.
        "device": str(contestants[0].engine.device), "torch_threads": torch.get_num_threads(),
    }
    store = CompletionStore(out, fingerprint, restart)
    todo = [(s, c) for s in sample_set.samples for c in contestants if store.get(s.key, c.identity) is None]
    line_protocol = sample_set.protocol == "line"
    resumed = len(sample_set.samples) * len(contestants) - len(todo)
    if resumed:
        echo(f"resuming: {resumed} completions already in {store.path}")

    def finish(interrupted: bool) -> dict:
        rows, done = summarise(contestants, sample_set, store)
        result = {
            "rows": rows, "samples": done, "samples_requested": config.eval.samples,
            "protocol": sample_set.protocol, "source": sample_set.source, "model": loaded.name,
            "num_layers": loaded.num_layers, "exit_points": contestants[0].engine.exit_points,
            "energy_source": meter.source, "device": fingerprint["device"], "exit_head": fingerprint["exit_head"],
            "torch_threads": fingerprint["torch_threads"], "wall_seconds": time.perf_counter() - started,
            "interrupted": interrupted, "completions_reused": resumed, "notes": notes,
            "config": dataclasses.asdict(config), "versions": versions(), "hash_seed": "CodeBLEU scored as with PYTHONHASHSEED=0",
        }
        if rows:
            write_results(out, result)
            if plots:
                write_plots(out, result)
        return result

    try:
        if todo:
            _run_all(sample_set.samples, contestants, store, config, line_protocol, progress, resumed)
    except KeyboardInterrupt:
        result = finish(True)
        echo(f"interrupted: results over {result['samples']} finished samples written to {out}; "
             "run the same command again to resume")
        raise
    return finish(False)


def _run_all(samples: list[EvalSample], contestants: list[Contestant], store: CompletionStore, config,
             line_protocol: bool, progress, resumed: int) -> None:
    """Every contestant on every sample; `progress(done, total, note)` after each stored completion."""
    # Warm-up (allocator, kernels, caches) so the first contestant isn't charged for it; not stored.
    for contestant in contestants:
        _complete(contestant, samples[0], config, line_protocol)
    total, done = len(samples) * len(contestants), resumed
    for index, sample in enumerate(samples):
        prefills: dict = {}
        shift = index % len(contestants)
        for contestant in contestants[shift:] + contestants[:shift]:  # rotate: no one always goes first
            if store.get(sample.key, contestant.identity) is not None:
                continue
            store.add(_complete(contestant, sample, config, line_protocol, prefills))
            done += 1
            if progress:  # a callback; False or None: quiet
                progress(done, total, f"sample {index + 1}/{len(samples)} {contestant.name}")


def format_summary(result: dict) -> str:
    """The table results.md holds, for the terminal."""
    from greencode.eval.report import markdown_table

    return markdown_table(result["rows"])
