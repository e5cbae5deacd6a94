"""Hardening (#16): training that survives Ctrl-C and shared folders (finetune edges; agent runs below)."""

from __future__ import annotations

import os
import signal

import pytest
from transformers import TrainerCallback

from greencode.config import replace
from greencode.errors import GreencodeError
from tests.train.test_finetune import _config
from train.finetune import CHECKPOINTS, run_finetune
from train.run_lock import output_lock

QUIET = {"echo": lambda _: None}


class CtrlC(TrainerCallback):
    """The real SIGINT, `times` times, at the start of optimiser step `at` (0-based)."""

    def __init__(self, at: int, times: int = 1):
        self.at, self.times = at, times

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)


def test_a_second_run_on_the_same_folder_is_refused_by_the_lock(tmp_path):
    out = tmp_path / "lite"
    with output_lock(out, "greencode train finetune"):  # another run holds the folder
        with pytest.raises(GreencodeError, match=rf"another `greencode train finetune` \(pid {os.getpid()}\) is "
                                                 "using this folder"):
            run_finetune(_config(tmp_path), output=out, max_steps=1, overwrite=True, **QUIET)
        assert [entry.name for entry in out.iterdir()] == [".greencode.lock"]  # nothing deleted or written


def test_double_ctrl_c_before_the_first_checkpoint_leaves_a_usable_folder(tmp_path):
    out = tmp_path / "lite"
    config = _config(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C aborts at once (the CLI prints 'interrupted')
        run_finetune(config, output=out, max_steps=3, callbacks=(CtrlC(at=0, times=2),), **QUIET)
    assert (out / "run.json").is_file() and not list((out / CHECKPOINTS).glob("checkpoint-*"))
    with pytest.raises(GreencodeError, match="stopped before its first checkpoint, so there is nothing to resume; "
                                             "start it again without --resume"):
        run_finetune(config, output=out, max_steps=3, resume=True, **QUIET)
    info = run_finetune(config, output=out, max_steps=1, **QUIET)  # a plain rerun starts it again
    assert info["steps"] == 1 and (out / "model.safetensors").is_file()


def test_resuming_a_run_that_reached_max_steps_changes_nothing(tmp_path):
    out = tmp_path / "lite"
    config = _config(tmp_path, save_steps=2)
    run_finetune(config, output=out, max_steps=2, **QUIET)
    assert (out / CHECKPOINTS / "checkpoint-2").is_dir()
    model = out / "model.safetensors"
    before = (model.stat().st_mtime_ns, model.read_bytes())
    with pytest.raises(GreencodeError, match="checkpoint is at step 2, which already reaches max_steps 2; pass a "
                                             "larger --max-steps"):
        run_finetune(config, output=out, max_steps=2, resume=True, **QUIET)
    assert (model.stat().st_mtime_ns, model.read_bytes()) == before


def test_save_steps_of_the_resumed_run_are_used(tmp_path):
    out = tmp_path / "lite"
    config = _config(tmp_path, save_steps=1000)
    stopped = run_finetune(config, output=out, max_steps=4,
                           callbacks=(CtrlC(at=1),), **QUIET)
    assert stopped["interrupted"] and (out / CHECKPOINTS / "checkpoint-2").is_dir()

    class StopAfterStep3(TrainerCallback):  # look at the folder between steps 3 and 4
        seen: list = []

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                StopAfterStep3.seen = sorted(p.name for p in (out / CHECKPOINTS).glob("checkpoint-*"))

    run_finetune(replace(config, finetune={"save_steps": 1}), output=out, max_steps=4, resume=True,
                 callbacks=(StopAfterStep3(),), **QUIET)
    assert StopAfterStep3.seen == ["checkpoint-3"]  # saved at step 3 (save_steps 1), not only at the end
