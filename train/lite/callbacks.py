"""Trainer callbacks of a LITE run: Ctrl-C saves a checkpoint, a clock for training tokens/s, and the
save/logging steps of this run (not the checkpoint's) on --resume."""

from __future__ import annotations

import signal
import time

from transformers import TrainerCallback


class CheckpointOnInterrupt(TrainerCallback):
    """First Ctrl-C: finish the optimiser step, save a checkpoint, stop. A second one aborts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ngreencode: saving a checkpoint after this step (Ctrl-C again to abort without saving)",
              flush=True)

    def on_train_begin(self, args, state, control, **kwargs):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class StepClock(TrainerCallback):
    """Seconds spent in optimiser steps (not in checkpoint saves or set-up), for tokens/s."""

    def __init__(self):
        self.steps, self.seconds, self._began = 0, 0.0, None

    def on_step_begin(self, args, state, control, **kwargs):
        self._began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._began is not None:
            self.steps += 1
            self.seconds += time.perf_counter() - self._began


class StepsFromArguments(TrainerCallback):
    """On --resume the Trainer restores save_steps and logging_steps from the checkpoint: use this run's."""

    def on_train_begin(self, args, state, control, **kwargs):
        state.save_steps, state.logging_steps = args.save_steps, args.logging_steps
