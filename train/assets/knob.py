"""What the knob means, and the confirm-at-exit bound, calibrated on held-out code (the validation split).

Prompts are cut from validation-split files of each language (never the test split, never the files the
maps or the agent were fitted on), and full depth continues each greedily (train/agent/batched_trajectories.py).
At every exit point of every generated token the signals a policy can read are kept: the agent's P(exit),
the exit head's max probability (over the shortlist, as decoding computes it) and whether its top-1 is
full depth's token. `replay` then runs agent:T:C on those tokens: a token leaves at the first exit point
where P(exit) >= T and the exit head's max probability >= C (greencode.exits.policies.Agent); each exit
the agent proposes costs one exit-head pass (the head is decoded anyway to pick the token; a veto pays it
without leaving). The first token of a completion comes out of the prefill at full depth and is left out.

`calibrate_knob` picks C (the best modelled speed-up at MIN_AGREEMENT token agreement, over T and C) and
tabulates what each T means at that C: "at T, X% of tokens equal full depth's". Both go to the manifest
("knob"), which `greencode info` and the TUI's knob label read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from greencode.errors import GreencodeError
from train.assets.calibration import LANGUAGES

MIN_AGREEMENT = 0.95  # token agreement the confirm bound is chosen at
THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.98)
CONFIRMS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class ExitSignals:
    """Per generated token (rows) and exit point (columns), what a policy can read there."""

    p_exit: np.ndarray  # (N, E) the agent's P(exit)
    max_prob: np.ndarray  # (N, E) the exit head's max softmax probability
    correct: np.ndarray  # (N, E) bool: the exit head's top-1 is full depth's token
    language: np.ndarray  # (N,) index into LANGUAGES
    position: np.ndarray  # (N,) index of the token in its completion (0: the prefill's, always full depth)
    exit_points: list[int]
    num_layers: int

    def only(self, mask: np.ndarray) -> "ExitSignals":
        return ExitSignals(self.p_exit[mask], self.max_prob[mask], self.correct[mask], self.language[mask],
                           self.position[mask], self.exit_points, self.num_layers)


def read_signals(loaded, raw, agent, maps, head, batch: int = 512) -> ExitSignals:
    """The signals of RawTrajectories `raw` through `maps` and `head` (train.assets.exit_maps.ExitHead)."""
    import torch

    from greencode.exits.agent import agent_observation

    points = list(raw.exits)
    n = raw.final_top1.shape[0]
    p_exit, max_prob = np.zeros((n, len(points)), np.float32), np.zeros((n, len(points)), np.float32)
    correct = np.zeros((n, len(points)), bool)
    final = raw.final_top1
    with torch.inference_mode():
        for e, p in enumerate(points):
            for start in range(0, n, batch):
                h = raw.exits[p][start:start + batch].float()
                obs = agent_observation(loaded.adapter, h).reshape(h.shape)
                if agent.position_feature:
                    obs = torch.cat([obs, obs.new_full((len(h), 1), e / max(1, len(points) - 1))], -1)
                p_exit[start:start + batch, e] = agent.prob_exit(obs).numpy()
                logits = head.logits(maps(p, h) if maps is not None else h).float()
                max_prob[start:start + batch, e] = torch.softmax(logits, -1).max(-1).values.numpy()
                top = logits.argmax(-1)
                top = head.ids[top] if head.ids is not None else top
                correct[start:start + batch, e] = (top == final[start:start + batch]).numpy()
    sample = raw.sample.numpy()
    starts = np.r_[0, np.flatnonzero(np.diff(sample)) + 1]
    position = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return ExitSignals(p_exit, max_prob, correct, raw.language.numpy(), position, points, loaded.num_layers)


def replay(signals: ExitSignals, cost, threshold: float, confirm: float = 0.0) -> dict:
    """agent:T:C on the signals' tokens (the prefill's token left out): token agreement with full depth,
    the share that exits early, mean exit layer and the modelled speed-up (cost: greencode.decoding.step.CostModel)."""
    s = signals.only(signals.position > 0)
    if not len(s.position):
        raise GreencodeError("knob calibration: no decoded tokens to replay (every continuation ended at once)")
    proposes = s.p_exit >= threshold
    leaves = proposes & (s.max_prob >= confirm)
    n, e = leaves.shape
    first = np.where(leaves.any(1), leaves.argmax(1), e)  # e = full depth
    exited = first < e
    column = np.minimum(first, e - 1)
    agrees = np.where(exited, s.correct[np.arange(n), column], True)
    layers = np.where(exited, np.asarray(s.exit_points)[column], s.num_layers)
    # exit-head passes: every proposal up to and including the exit (each decodes the head to confirm)
    upto = np.arange(e)[None, :] <= first[:, None]
    passes = (proposes & upto).sum(1)
    units = np.asarray([cost.units(int(layer), int(k)) for layer, k in zip(layers, passes)])
    return {"agreement": round(float(agrees.mean()), 4), "early_exit_rate": round(float(exited.mean()), 4),
            "mean_exit_layer": round(float(layers.mean()), 2),
            "modelled_speedup": round(float(cost.full_units / units.mean()), 3), "tokens": int(n)}


def choose_confirm(signals: ExitSignals, cost, thresholds=THRESHOLDS, confirms=CONFIRMS,
                   min_agreement: float = MIN_AGREEMENT) -> tuple[float, dict]:
    """(C, grid): the confirm bound whose best T gives the highest modelled speed-up at >= min_agreement
    token agreement in every language (the worse language decides), and every (C, T) figure."""
    languages = {LANGUAGES[i]: i for i in sorted(set(signals.language.tolist()))}
    grid: dict[str, dict[str, dict]] = {}
    best = (0.0, 0.0)
    for c in confirms:
        grid[f"{c:g}"] = {}
        for t in thresholds:
            per = {lang: replay(signals.only(signals.language == i), cost, t, c) for lang, i in languages.items()}
            grid[f"{c:g}"][f"{t:g}"] = per
            if all(f["agreement"] >= min_agreement for f in per.values()):
                speed = min(f["modelled_speedup"] for f in per.values())
                best = max(best, (speed, -c))  # ties: the smaller bound (fewer vetoes paid)
    return -best[1], grid


def knob_table(signals: ExitSignals, cost, confirm: float, thresholds=THRESHOLDS) -> dict:
    """{T: {language: figures}} at confirm bound C: what each knob setting means on held-out code."""
    present = sorted(set(signals.language.tolist()))
    return {f"{t:g}": {LANGUAGES[i]: replay(signals.only(signals.language == i), cost, t, confirm)
                       for i in present} for t in thresholds}


def knob_prompts(validation: dict[str, list], samples_per_language: int, log=print) -> tuple[dict, list[str]]:
    """The validation files per language, and one line per language whose split is too small for the
    prompts asked (each prompt needs its own file): the calibration then runs on what there is."""
    short = []
    for language, files in validation.items():
        if len(files) < samples_per_language:
            short.append(f"{language}: the validation split has {len(files)} files, fewer than the "
                         f"{samples_per_language} prompts asked; calibrating on {len(files)} (and every language "
                         "on as many, so they weigh alike)")
            log(f"knob calibration: {short[-1]}")
    return validation, short


def calibrate_knob(config, loaded, output, samples_per_language: int = 80, tokens_per_sample: int = 16,
                   max_context: int = 256, ramp: int = 0, seed: int = 7, log=print, maps=None, shortlist=None,
                   agent_path: str | None = None) -> dict:
    """The manifest's "knob" for `loaded` with its exit `maps`, `shortlist` and agent (by default the ones the
    model loaded with): C chosen on validation-split continuations, each T's meaning at that C, and what it
    was measured on. `ramp` (R) is recorded as given: it acts across tokens (derailment), so `greencode eval`
    chooses it, not a per-token replay."""
    from pathlib import Path

    from greencode.decoding.step import CostModel
    from greencode.exits.agent import ExitAgent
    from train.agent.batched_trajectories import RawTrajectories, generate_trajectories
    from train.assets.calibration import calibration_corpus
    from train.assets.exit_maps import ExitHead

    maps = maps if maps is not None else loaded.adapter.exit_maps
    shortlist = shortlist if shortlist is not None else loaded.info.get("shortlist")
    agent_path = agent_path or loaded.info.get("agent_path")
    if not agent_path:
        raise GreencodeError(f"{loaded.name}: no exit agent to calibrate the knob for; build one with "
                             "`greencode train default`")
    validation, short = knob_prompts(calibration_corpus(config, "validation"), samples_per_language, log)
    points = list(maps.exit_points)
    raw_path = Path(output) / "knob-trajectories.safetensors"
    meta = {"model": loaded.name, "exit_points": points, "samples_per_language": samples_per_language,
            "tokens_per_sample": tokens_per_sample, "max_context": max_context, "seed": seed}
    cached = RawTrajectories.load(raw_path) if raw_path.is_file() else None
    if cached is not None and cached[1] == meta:
        raw = cached[0]
        log(f"reusing the knob's trajectories in {raw_path}")
    else:
        raw = generate_trajectories(loaded, validation, points, samples_per_language, tokens_per_sample, max_context,
                                    batch_size=16, seed=seed, log=log)
        Path(output).mkdir(parents=True, exist_ok=True)
        raw.save(raw_path, meta)
    agent = ExitAgent.load(agent_path, loaded.hidden_size, points)
    signals = read_signals(loaded, raw, agent, maps, ExitHead(loaded.adapter, shortlist))
    cost = CostModel.of(loaded.adapter, len(shortlist) if shortlist is not None else None)
    confirm, grid = choose_confirm(signals, cost)
    decoded = signals.position > 0
    tokens = {lang: int((decoded & (signals.language == i)).sum()) for i, lang in enumerate(LANGUAGES)}
    log(f"knob: confirm bound C = {confirm:g} (best modelled speed-up at >= {MIN_AGREEMENT:.0%} token agreement "
        f"in both languages); {tokens} decoded tokens")
    return {
        "confirm": confirm, "ramp": ramp, "table": knob_table(signals, cost, confirm),
        "grid": grid,
        "calibration": {
            "split": "validation (files neither the maps nor the agent were fitted on; never the test split)",
            "prompts_per_language": {lang: len(set(s["file"] for s in raw.sources if s["language"] == lang))
                                     for lang in LANGUAGES},
            "decoded_tokens": tokens, "tokens_per_sample": tokens_per_sample, "max_context": max_context,
            "rule": f"C: the best modelled speed-up over T at >= {MIN_AGREEMENT:.0%} token agreement with full depth "
                    "in the worse language; table: agreement and modelled speed-up per T at that C, along full "
                    "depth's own greedy continuations (the prefill's token left out)",
            "short": short,
        },
    }
