"""Tokens/s of a LITE training step, variants alternated in one run: labels vs distill, full head vs
shortlist at the exits, full fine-tuning vs LoRA (`greencode train finetune --benchmark`).

One step here is what the Trainer does per micro-batch plus an optimiser step: forward with every
hidden state, the loss (for distill also the frozen teacher's forward under no_grad), backward, AdamW.
Variants run round-robin (the order rotates each round) after one untimed warm-up round, so load
from other work on a shared machine falls on all of them alike; the load average is recorded.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass

import torch

from greencode.errors import GreencodeError

DEFAULT_SHORTLIST = 8192  # when the model has none: the K most frequent tokens of the chunks read


@dataclass
class _Student:
    model: torch.nn.Module
    adapter: object
    optimizer: torch.optim.Optimizer


def _student(base, lora: bool, ft) -> _Student:
    from greencode.model.adapters import adapter_for
    from train.lite.finetune import _lora_wrap
    from train.lite.schedule import learning_rate

    model = copy.deepcopy(base).requires_grad_(True)
    adapter = adapter_for(model)  # LoRA wraps the same modules in place, so the adapter still reads them
    if lora:
        model = _lora_wrap(model, ft.lora_rank, ft.lora_alpha)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    return _Student(model, adapter, torch.optim.AdamW(params, lr=learning_rate(ft, lora)))


def _step(student: _Student, ids: torch.Tensor, targets: str, shortlist, teacher, weights, ft) -> None:
    from train.lite.loss import distill_loss, lite_loss, sample_positions

    out = student.model(input_ids=ids, output_hidden_states=True)
    distill = targets == "distill"
    positions = sample_positions(ids.shape[1] - (0 if distill else 1), ft.exit_position_fraction)
    if distill:
        loss, _ = distill_loss(student.adapter, out.hidden_states, out.logits, teacher.logits(ids), weights,
                               ft.keep_final, positions, shortlist)
    else:
        loss, _ = lite_loss(student.adapter, out.hidden_states, out.logits, ids, weights, positions)
    loss.backward()
    student.optimizer.step()
    student.optimizer.zero_grad(set_to_none=True)


def _chunks(config, tokenizer, count: int) -> torch.Tensor:
    from train.lite.finetune import prepare_data

    train, _, _ = prepare_data(config, tokenizer, count, max_steps=1)  # tokenise only what the rounds read
    return torch.tensor(train.select(range(count))["input_ids"], dtype=torch.long)


def run_step_benchmark(config, rounds: int = 3, echo=print) -> dict:
    """Time `rounds` alternated steps of every variant on [model].spec with [finetune]'s sizes."""
    from greencode.exits.points import lite_weights
    from greencode.exits.points import resolve_exit_points
    from greencode.model.load import load_model
    from greencode.exits.shortlist import most_frequent
    from train.lite.finetune import exit_shortlist
    from train.lite.schedule import step_size
    from train.lite.teacher import Teacher

    if rounds < 1:
        raise GreencodeError(f"--bench-rounds {rounds}: give at least 1")
    ft = config.finetune
    size = step_size(ft, torch.cuda.is_available() and config.model.device != "cpu")
    loaded = load_model(config.model.spec, "float32", "cpu", config.model.cache_dir, adaptation=False)
    points = resolve_exit_points(config, loaded.num_layers, loaded.info)
    weights = lite_weights(loaded.num_layers, ft.weights, points)
    chunks = _chunks(config, loaded.tokenizer, size.batch_size * (rounds + 1))
    shortlist = exit_shortlist(config, loaded)
    source = "the model's"
    if shortlist is None:
        counts = torch.bincount(chunks.flatten(), minlength=loaded.adapter.vocab_size)
        shortlist, source = most_frequent(counts, DEFAULT_SHORTLIST), "the chunks' most frequent"
    teacher = Teacher(loaded.model, "the model as loaded")  # the students train copies of it
    students = {False: _student(loaded.model, False, ft), True: _student(loaded.model, True, ft)}
    variants = [(targets, head, lora) for lora in (False, True)
                for targets, head in (("labels", "full"), ("distill", "full"), ("distill", "shortlist"))]
    seconds = {v: 0.0 for v in variants}
    load_before = os.getloadavg()[0]
    echo(f"{len(variants)} variants x {rounds} timed rounds (+1 warm-up) of {size.batch_size} x {ft.seq_len} tokens; "
         f"shortlist: {len(shortlist)} tokens ({source})")
    for round_index in range(rounds + 1):
        ids = chunks[round_index * size.batch_size:(round_index + 1) * size.batch_size]
        order = variants[round_index % len(variants):] + variants[:round_index % len(variants)]
        for variant in order:
            targets, head, lora = variant
            began = time.perf_counter()
            _step(students[lora], ids, targets, shortlist if head == "shortlist" else None, teacher, weights, ft)
            if round_index:  # round 0 warms up
                seconds[variant] += time.perf_counter() - began
        echo(f"round {round_index}/{rounds} done" + (" (warm-up)" if round_index == 0 else ""))
    tokens = rounds * size.batch_size * ft.seq_len
    rates = {v: tokens / seconds[v] for v in variants}
    baseline = rates[("labels", "full", False)]
    return {
        "model": loaded.name, "tokens_per_step": size.batch_size * ft.seq_len, "rounds": rounds,
        "exit_position_fraction": ft.exit_position_fraction, "shortlist_tokens": len(shortlist),
        "shortlist_source": source, "threads": torch.get_num_threads(),
        "rows": [{"targets": t, "exit_head": h, "weights": "LoRA" if lora else "full",
                  "tokens_per_s": round(rates[(t, h, lora)], 2),
                  "vs_labels_full_head_full_weights": round(rates[(t, h, lora)] / baseline, 3)}
                 for t, h, lora in variants],
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
