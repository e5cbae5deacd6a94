"""How big a LITE step is where the user runs it, and progress lines a user can read.

The paper's step (4 sequences x grad_accum 32 x 256 tokens, 32k tokens) suits a GPU. On a CPU that is
5-15 minutes per optimiser step even for SmolLM2-135M (35-120 tokens/s), so when no GPU is found and the
user left [finetune].batch_size / grad_accum / max_steps at 0 (auto), a step is 2 x 4 x 256 tokens
(SmolLM2-135M: 17-25 s on 2 idle cores, a minute or more on a busy one) and a run is CPU_MAX_STEPS steps.
LoRA ("auto" on a CPU) trains faster than all weights (1.3x on 2 idle cores) and keeps the shared head frozen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from transformers import TrainerCallback

GPU_BATCH, GPU_ACCUM = 4, 32  # the paper's
CPU_BATCH, CPU_ACCUM = 2, 4
CPU_MAX_STEPS = 100
FULL_LR = 1e-5  # the paper's, for all weights
LORA_LR = 3e-4  # LoRA's adapters start at zero and need a larger step (chosen by a CPU A/B: docs/results.md)


@dataclass(frozen=True)
class StepSize:
    batch_size: int
    grad_accum: int
    max_steps: int  # -1 = run the epochs
    notes: tuple[str, ...]  # what was chosen for the user, one line each
    lora: bool = False
    learning_rate: float = FULL_LR


def step_size(ft, on_gpu: bool, max_steps: int | None = None) -> StepSize:
    """Fill [finetune]'s auto settings (0, "auto") for a GPU or a CPU: batch_size, grad_accum, max_steps,
    lora and learning_rate."""
    batch = ft.batch_size or (GPU_BATCH if on_gpu else CPU_BATCH)
    accum = ft.grad_accum or (GPU_ACCUM if on_gpu else CPU_ACCUM)
    steps = ft.max_steps if max_steps is None else max_steps
    notes = []
    if not on_gpu and not (ft.batch_size and ft.grad_accum):
        notes.append(f"CPU: batch {batch} x accum {accum} x {ft.seq_len} tokens per step; the paper's "
                     f"{GPU_BATCH} x {GPU_ACCUM} is for GPUs, set [finetune] to override")
    if steps == 0:
        steps = -1 if on_gpu else CPU_MAX_STEPS
        if not on_gpu:
            notes.append(f"CPU: {CPU_MAX_STEPS} optimiser steps (the ETA follows the first); --max-steps N to change, "
                         "-1 for whole epochs")
    lora = (not on_gpu) if ft.lora == "auto" else bool(ft.lora)
    if ft.lora == "auto" and not on_gpu:
        notes.append(f"CPU: LoRA rank {ft.lora_rank} on every linear layer, lr {learning_rate(ft, True):g}; "
                     "--finetune.lora false for the paper's full fine-tuning")
    return StepSize(batch, accum, steps, tuple(notes), lora, learning_rate(ft, lora))


def learning_rate(ft, lora: bool) -> float:
    """[finetune].learning_rate, or where it is 0 (auto) the one for all weights or for LoRA."""
    return ft.learning_rate or (LORA_LR if lora else FULL_LR)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressLine(TrainerCallback):
    """One line after the first micro-batch (a sign of life within a minute), after the first step and
    every logging_steps steps: step, tokens/s, elapsed and ETA, and the last logged loss."""

    def __init__(self, tokens_per_micro_batch: int, echo=print):
        self.tokens_per_micro_batch = tokens_per_micro_batch
        self.echo = echo
        self.micro_batches = 0
        self.began: float | None = None
        self.first_step = 0
        self.loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.began, self.first_step = time.perf_counter(), state.global_step

    def _line(self, state, what: str) -> None:
        elapsed = time.perf_counter() - self.began
        rate = self.micro_batches * self.tokens_per_micro_batch / max(elapsed, 1e-9)
        done = state.global_step - self.first_step
        left = max(state.max_steps - state.global_step, 0)
        eta = f", ETA {_clock(elapsed / done * left)}" if done else ""
        loss = f", loss {self.loss:.4f}" if self.loss is not None else ""
        self.echo(f"{what}: {rate:.1f} tokens/s, {_clock(elapsed)} elapsed{eta}{loss}")

    def on_substep_end(self, args, state, control, **kwargs):
        self.micro_batches += 1
        if self.micro_batches == 1:
            self._line(state, f"step {state.global_step + 1}/{state.max_steps}, micro-batch 1/"
                              f"{args.gradient_accumulation_steps}")

    def on_step_end(self, args, state, control, **kwargs):
        self.micro_batches += 1  # the step's last micro-batch has no substep_end
        done = state.global_step - self.first_step
        if done == 1 or state.global_step % args.logging_steps == 0 or state.global_step == state.max_steps:
            self._line(state, f"step {state.global_step}/{state.max_steps}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
