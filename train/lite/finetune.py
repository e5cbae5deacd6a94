"""LITE fine-tuning (paper III-D): teach the intermediate layers to speak through the one LM head.

Targets ([finetune].targets): "distill" (default) trains every exit on the frozen teacher's final-layer
distribution (KL; train/lite/teacher.py), with a term keeping the model's own final layer on it; "labels" is
eq. 1 as the paper writes it (next-token cross-entropy at every exit and the final layer).

`run_finetune(config, ...)` loads [model].spec, packs the train split of [data].corpus into
[finetune].seq_len chunks, measures exit agreement on the validation split, trains with `LiteTrainer`
(the HF Trainer, so `accelerate launch` / `torchrun` run it unchanged with DDP), measures again and
writes OUTPUT: an HF model directory (safetensors, LoRA merged) + greencode.json. With LoRA the
un-merged adapter is kept as well, in OUTPUT/lora-adapter (adapter_model.safetensors, a few MB).

OUTPUT/checkpoints holds the Trainer's checkpoints (Ctrl-C saves one; --resume continues from the
last) and OUTPUT/run.json what was measured before training, so a resumed run reports it too.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments, set_seed

from greencode.files.atomic import atomic_write_text
from greencode.errors import GreencodeError
from train.lite.callbacks import CheckpointOnInterrupt, StepClock, StepsFromArguments
from train.lite.loss import distill_loss, lite_loss, measure_languages, sample_positions
from train.lite.data import collate, exit_shortlist, prepare_data
from train.lite.output import CHECKPOINTS, GREENCODE_JSON, RUN_JSON, check_output, check_steps_left, last_checkpoint
from train.lite.report import layer_keys, measured_keys
from train.run_output import output_lock

LORA_ADAPTER = "lora-adapter"
# What must match between a run and the one it resumes.
RESUME_KEYS = ("base_model", "exit_points", "weights", "lora", "seq_len", "targets", "keep_final", "teacher")


@dataclass
class LiteArguments:
    """What the LITE loss needs beside TrainingArguments."""

    weights: dict[int, float]  # {exit layer: w} over the exit points and the final layer
    exit_position_fraction: float = 1.0  # share of positions whose exit losses count
    targets: str = "labels"  # labels (eq. 1) | distill (KL to the teacher's final layer)
    keep_final: float = 0.0  # distill: extra weight on the final layer's KL to the teacher
    shortlist: torch.Tensor | None = None  # distill: token ids the exits decode over; None = all


class LiteTrainer(Trainer):
    """Trainer whose loss is eq. 1 (the weighted mean of the CEs at every exit point and the final layer)
    or, with targets = distill, the same weighted mean of KLs to the teacher plus keep_final x KL_L."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean: the Trainer divides by GA

    def __init__(self, *args, adapter, lite: LiteArguments, teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.adapter = adapter
        self.lite = lite
        self.teacher = teacher
        self._exit_loss_sums: dict[int, float] = {}
        self._exit_loss_batches = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        input_ids = inputs["input_ids"]  # (B, T)
        labels = inputs.get("labels", input_ids)
        outputs = model(input_ids=input_ids, attention_mask=inputs.get("attention_mask"),
                        output_hidden_states=True)
        distill = self.lite.targets == "distill"
        # On CPU the head dominates: exit losses may use a random share of the positions (distillation
        # has a target at every position, labels at all but the last).
        positions = (sample_positions(input_ids.shape[1] - (0 if distill else 1), self.lite.exit_position_fraction,
                                      device=input_ids.device) if model.training else None)
        if distill:
            teacher_logits = self.teacher.logits(input_ids, inputs.get("chunk"))  # no grad
            shortlist = None if self.lite.shortlist is None else self.lite.shortlist.to(input_ids.device)
            loss, per_layer = distill_loss(self.adapter, outputs.hidden_states, outputs.logits, teacher_logits,
                                           self.lite.weights, self.lite.keep_final, positions, shortlist)
        else:
            loss, per_layer = lite_loss(self.adapter, outputs.hidden_states, outputs.logits, labels,
                                        self.lite.weights, positions)
        if model.training:
            for layer, value in per_layer.items():
                self._exit_loss_sums[layer] = self._exit_loss_sums.get(layer, 0.0) + value.item()
            self._exit_loss_batches += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean loss of every exit since the last log to the Trainer's training logs."""
        if "loss" in logs and self._exit_loss_batches:
            for layer in sorted(self._exit_loss_sums):
                logs[f"loss_layer_{layer}"] = round(self._exit_loss_sums[layer] / self._exit_loss_batches, 4)
            self._exit_loss_sums, self._exit_loss_batches = {}, 0
        super().log(logs, start_time)


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def bf16_enabled(setting: str) -> bool:
    """auto: where the accelerator has it (CUDA with bf16). On CPU autocast is opt-in ("on")."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _lora_wrap(model, rank: int, alpha: int):
    from peft import LoraConfig, get_peft_model

    # all-linear: every projection of every layer, never the (tied) LM head, which the exits share.
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules="all-linear", lora_dropout=0.0,
                        task_type="CAUSAL_LM", fan_in_fan_out=model.config.model_type == "gpt2")  # GPT-2: Conv1D
    return get_peft_model(model, config)


def _save_final(model, tokenizer, output: Path, info: dict, staging: Path) -> None:
    """Write the model into a staging dir inside OUTPUT, then move each file in (greencode.json last)."""
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    stale = output / LORA_ADAPTER
    if stale.exists():
        shutil.rmtree(stale)
    for entry in staging.iterdir():
        os.replace(entry, output / entry.name)
    staging.rmdir()
    _write_json(output / GREENCODE_JSON, info)


def run_finetune(config, output: str | Path | None = None, max_steps: int | None = None, resume: bool = False,
                 overwrite: bool = False, callbacks: tuple = (), echo=print) -> dict:
    """Run LITE fine-tuning as [finetune] says; returns greencode.json's content (or, when interrupted,
    {"interrupted": True, "checkpoint": ...}). The output folder is locked for the whole run."""
    output = Path(output or config.finetune.output).expanduser()
    if not _is_main_process():
        return _run_finetune(config, output, max_steps, resume, overwrite, callbacks, echo)
    with output_lock(output, "greencode train finetune"):  # before check_output may delete anything
        return _run_finetune(config, output, max_steps, resume, overwrite, callbacks, echo)


def _run_finetune(config, output: Path, max_steps: int | None, resume: bool, overwrite: bool, callbacks: tuple,
                  echo) -> dict:
    from greencode.exits.points import lite_weights
    from greencode.model.load import load_model
    from greencode.exits.points import resolve_exit_points

    from train.lite.schedule import ProgressLine, step_size
    from train.lite.teacher import attach_cache, load_teacher

    ft = config.finetune
    use_cuda = torch.cuda.is_available() and config.model.device != "cpu"
    size = step_size(ft, use_cuda, max_steps)
    if _is_main_process():
        check_output(output, resume, overwrite)
        if resume:
            check_steps_left(output, size.max_steps)
    for note in size.notes:
        echo(note)
    loaded = load_model(config.model.spec, "float32", "cpu", config.model.cache_dir,  # the Trainer places it
                        adaptation=False)  # LITE trains the raw exits
    points = resolve_exit_points(config, loaded.num_layers, loaded.info)
    weights = lite_weights(loaded.num_layers, ft.weights, points)
    distill = ft.targets == "distill"
    teacher = load_teacher(config, loaded) if distill else None  # before any LoRA wrap changes the model
    chunks_per_step = size.batch_size * size.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
    train_data, validation, skipped = prepare_data(config, loaded.tokenizer, chunks_per_step, size.max_steps)
    echo(f"data: {config.data.corpus}: {len(train_data)} train chunks of {ft.seq_len} tokens, validation tokens "
         f"{', '.join(f'{lang} {chunks.numel()}' for lang, chunks in validation.items())}, "
         f"{skipped} files skipped as not UTF-8")
    shortlist = exit_shortlist(config, loaded) if distill else None
    run = {"base_model": loaded.info.get("base_model", loaded.spec), "exit_points": points,
           "weights": layer_keys(weights), "lora": {"rank": ft.lora_rank, "alpha": ft.lora_alpha} if size.lora else False,
           "seq_len": ft.seq_len, "targets": ft.targets, "keep_final": ft.keep_final if distill else None,
           "teacher": teacher.name if distill else None,
           "shortlist": None if shortlist is None else len(shortlist)}
    if resume:
        before = json.loads((output / RUN_JSON).read_text())
        changed = [k for k in RESUME_KEYS if before.get(k) != json.loads(json.dumps(run[k]))]
        if changed:
            raise GreencodeError(f"{output}: --resume with different settings ({', '.join(changed)}) than the "
                                 "checkpoint; use the same config or --overwrite")

    model = loaded.model
    model.requires_grad_(True)
    if size.lora:
        set_seed(ft.seed)  # LoRA's A matrices are drawn here, before the Trainer seeds: one seed, one run
        model = _lora_wrap(model, ft.lora_rank, ft.lora_alpha)
    model.train()
    if distill and ft.teacher_cache:
        train_data = attach_cache(teacher, train_data, ft.teacher_cache, chunks_per_step, size.max_steps, ft.seed,
                                  echo)
    args = TrainingArguments(
        output_dir=str(output / CHECKPOINTS), per_device_train_batch_size=size.batch_size,
        gradient_accumulation_steps=size.grad_accum, learning_rate=size.learning_rate, num_train_epochs=ft.epochs,
        max_steps=size.max_steps, logging_steps=ft.logging_steps,
        save_strategy="steps", save_steps=ft.save_steps, save_total_limit=1, bf16=bf16_enabled(ft.bf16),
        seed=ft.seed, report_to="none", remove_unused_columns=False, use_cpu=not use_cuda,
        dataloader_num_workers=0, disable_tqdm=True,  # ProgressLine: tokens/s and ETA on lines of their own
        ddp_find_unused_parameters=False)  # every parameter takes part in eq. 1
    interrupt = CheckpointOnInterrupt()
    progress = ProgressLine(size.batch_size * ft.seq_len * args.world_size, echo=echo)
    trainer = LiteTrainer(model=model, args=args, train_dataset=train_data, data_collator=collate,
                          processing_class=loaded.tokenizer, callbacks=[interrupt, progress, StepsFromArguments(), *callbacks],
                          adapter=loaded.adapter, teacher=teacher,
                          lite=LiteArguments(weights=weights, exit_position_fraction=ft.exit_position_fraction,
                                             targets=ft.targets, keep_final=ft.keep_final, shortlist=shortlist))
    # Agreement is with the teacher's final layer when distilling (before training, with a teacher of
    # its own start, that is the model's own final layer).
    reference = teacher.logits if distill else None
    if not resume and _is_main_process():
        echo(f"measuring exit agreement before training ({sum(c.numel() for c in validation.values())} tokens) ...")
        measured = measure_languages(trainer.model, loaded.adapter, validation, points,
                                     reference if ft.teacher else None, shortlist, echo=echo)
        before = {**run, **measured_keys("before", measured)}
        output.mkdir(parents=True, exist_ok=True)
        _write_json(output / RUN_JSON, before)

    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train(resume_from_checkpoint=True if resume else None)
    state = trainer.state
    tokens_per_step = size.batch_size * size.grad_accum * ft.seq_len * args.world_size
    if interrupt.requested:
        return {"interrupted": True, "steps": state.global_step, "checkpoint": str(last_checkpoint(output))}
    if not trainer.is_world_process_zero():
        return {"steps": state.global_step}

    staging = output / f".saving-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    final = trainer.accelerator.unwrap_model(trainer.model)
    if size.lora:
        final.save_pretrained(staging / LORA_ADAPTER)  # the un-merged adapter, before merging changes it
        final = final.merge_and_unload()
    echo("measuring exit agreement after training ...")
    measured = measure_languages(final, loaded.adapter, validation, points, reference, shortlist, echo=echo)
    info = {**before, "steps": state.global_step, "tokens_trained": state.global_step * tokens_per_step,
            **measured_keys("after", measured), "agreement_reference": "teacher final layer" if distill else "own final layer",
            "throughput_tokens_per_s": round(clock.steps * tokens_per_step / max(clock.seconds, 1e-9), 2),
            "corpus": config.data.corpus, "validation_tokens": measured["tokens"],
            "batch_size": size.batch_size, "grad_accum": size.grad_accum,
            "learning_rate": size.learning_rate, "exit_position_fraction": ft.exit_position_fraction,
            "bf16": args.bf16, "world_size": args.world_size, "train_seconds": round(clock.seconds, 1)}
    _save_final(final, loaded.tokenizer, output, info, staging)
    return info
