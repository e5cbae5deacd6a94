"""The knob's calibration (train/assets/knob.py) and how the engine, info and TUI read it (greencode/exits/knob.py)."""

from __future__ import annotations

import numpy as np
import pytest

from greencode.decoding.step import CostModel
from greencode.errors import GreencodeError
from greencode.exits.knob import agent_defaults, knob_figures, knob_meaning, shipped_knob
from train.assets.knob import ExitSignals, choose_confirm, knob_prompts, knob_table, replay

POINTS = [4, 6, 10]


def _signals(p_exit, max_prob, correct, position=None, language=None) -> ExitSignals:
    n = len(p_exit)
    return ExitSignals(np.asarray(p_exit, np.float32), np.asarray(max_prob, np.float32), np.asarray(correct, bool),
                       np.zeros(n, int) if language is None else np.asarray(language),
                       np.ones(n, int) if position is None else np.asarray(position), POINTS, 12)


def test_replay_exits_at_the_first_confirmed_proposal_and_pays_each_head_decoded(tiny_llama):
    cost = CostModel.of(tiny_llama.adapter)
    # token 0: the agent proposes at 4 (unsure head: vetoed) and 6 (sure: exits, right);
    # token 1: proposes at 4 (sure, wrong); token 2: the prefill's (position 0): left out
    signals = _signals([[0.9, 0.9, 0.1], [0.95, 0.2, 0.2], [0.99, 0.99, 0.99]],
                       [[0.3, 0.8, 0.9], [0.9, 0.9, 0.9], [0.9, 0.9, 0.9]],
                       [[False, True, True], [False, True, True], [True, True, True]], position=[1, 2, 0])
    free = replay(signals, cost, 0.8, 0.0)
    assert free["tokens"] == 2 and free["agreement"] == 0.0 and free["mean_exit_layer"] == 4
    confirmed = replay(signals, cost, 0.8, 0.5)
    assert confirmed["agreement"] == 0.5 and confirmed["mean_exit_layer"] == 5
    units = cost.units(6, 2) + cost.units(4, 1)  # the veto at 4 paid its head
    assert confirmed["modelled_speedup"] == round(cost.full_units * 2 / units, 3)
    assert replay(signals, cost, 0.8, 1.0)["mean_exit_layer"] == 12  # every proposal vetoed: full depth


def test_the_confirm_bound_is_the_fastest_that_keeps_both_languages_above_the_bar(tiny_llama):
    cost = CostModel.of(tiny_llama.adapter)
    rng = np.random.default_rng(0)
    n = 4000
    max_prob = rng.uniform(0, 1, (n, 3))
    correct = rng.uniform(0, 1, (n, 3)) < max_prob ** 0.2  # a sure head is right more often
    signals = _signals(np.full((n, 3), 0.99), max_prob, correct, language=np.arange(n) % 2)
    confirm, grid = choose_confirm(signals, cost, thresholds=(0.5,), confirms=(0.0, 0.5, 0.9, 0.99), min_agreement=0.95)
    assert confirm == 0.9  # 0 and 0.5 let too many wrong tokens out; 0.99 is slower than 0.9
    assert set(grid["0.9"]["0.5"]) == {"python", "java"}
    assert all(f["agreement"] >= 0.95 for f in grid["0.9"]["0.5"].values())
    assert min(f["agreement"] for f in grid["0.5"]["0.5"].values()) < 0.95
    table = knob_table(signals, cost, confirm, thresholds=(0.5, 0.9))
    assert set(table) == {"0.5", "0.9"} and set(table["0.5"]) == {"python", "java"}


def test_a_validation_split_too_small_for_the_prompts_is_one_line_per_language():
    files = {"python": ["a.py"] * 3, "java": ["A.java"] * 9}
    lines = []
    _, short = knob_prompts(files, 5, log=lines.append)
    assert short == ["python: the validation split has 3 files, fewer than the 5 prompts asked; calibrating on 3 "
                     "(and every language on as many, so they weigh alike)"]
    assert lines == [f"knob calibration: {short[0]}"]


KNOB = {"confirm": 0.6, "ramp": 2, "table": {"0.7": {"python": {"agreement": 0.95, "modelled_speedup": 1.3},
                                                      "java": {"agreement": 0.97, "modelled_speedup": 1.4}}}}


def test_agent_t_means_the_calibrated_bound_only_for_the_models_own_agent():
    info = {"agent_path": "/assets/agent.safetensors", "adaptation": {"knob": KNOB}}
    assert agent_defaults(info, "/assets/agent.safetensors") == (0.6, 2)
    assert agent_defaults(info, "/elsewhere/agent.safetensors") == (0.0, 0)
    assert agent_defaults({"agent_path": "/a", "adaptation": {}}, "/a") == (0.0, 0)  # today's manifests: no knob
    assert knob_meaning(KNOB, 0.71) == "T=0.7: 96% of tokens as full depth's, 1.35x modelled (held-out)"
    assert knob_figures(KNOB, 0.9) is None  # no calibrated T near it: no claim
    with pytest.raises(GreencodeError, match="manifest.json: knob confirm 1.5 must be in \\[0, 1\\]"):
        shipped_knob({"adaptation": {"knob": {**KNOB, "confirm": 1.5}}})
