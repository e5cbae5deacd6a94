"""Hardening (#16): training that survives Ctrl-C and shared folders (finetune edges; agent runs below)."""

from __future__ import annotations

import os
import signal

import pytest
from transformers import TrainerCallback

from greencode.config import replace
from greencode.errors import GreencodeError
from tests.train.lite.test_finetune import _config
from train.lite.finetune import CHECKPOINTS, run_finetune
from train.run_output import output_lock

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


# -- `greencode train agent`: PPO checkpoints, --resume, staged --overwrite -----------------------------

PPO_SHORT = {"n_steps": 64, "batch_size": 32, "n_epochs": 1, "timesteps": 512}


def _agent_config(**keys):
    from greencode.config import load_config

    return replace(load_config(overrides={}), agent={**PPO_SHORT, **keys}).agent


def _interrupted_agent_run(output, overwrite=False, at=200):
    """Train until Ctrl-C at step `at` (checkpoints at each rollout end); returns (run, cache, config)."""
    import train.agent.ppo as ppo
    from train.agent.run import AgentRun, run_settings
    from train.agent.trajectories import synthetic_cache

    cache, config = synthetic_cache(samples=16, seed=3), _agent_config()
    run = AgentRun.start(output, run_settings(config, cache), overwrite, resume=False, every_s=0.0)
    original = ppo._episode_logger

    def with_ctrl_c(progress=None, total=0, every=512):  # the episode log also presses Ctrl-C (the real SIGINT)
        logger = original(progress, total, every)
        inner = logger._on_step

        def on_step() -> bool:
            if logger.num_timesteps == at:
                os.kill(os.getpid(), signal.SIGINT)
            return inner()

        logger._on_step = on_step
        return logger

    return run, cache, config, with_ctrl_c


def _train(cache, config, run):
    from train.agent.ppo import train_agent

    return train_agent(cache, config, run.staging, run=run)


def _train_until_ctrl_c(run, cache, config, with_ctrl_c, monkeypatch) -> None:
    """Train the agent run until the planted Ctrl-C stops it."""
    import train.agent.ppo as ppo

    with monkeypatch.context() as patch:
        patch.setattr(ppo, "_episode_logger", with_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            _train(cache, config, run)


def test_ctrl_c_in_ppo_keeps_a_hashed_checkpoint_and_resume_finishes(tmp_path, monkeypatch):
    import hashlib
    import json

    from train.agent.run import CHECKPOINT, AgentRun, run_settings

    output = tmp_path / "agent"
    run, cache, config, with_ctrl_c = _interrupted_agent_run(output)
    _train_until_ctrl_c(run, cache, config, with_ctrl_c, monkeypatch)
    recorded = json.loads((run.staging / "run.json").read_text())
    checkpoint = run.staging / CHECKPOINT
    assert recorded["timesteps"] >= 200 and recorded["checkpoint"]["sha256"] == hashlib.sha256(
        checkpoint.read_bytes()).hexdigest()
    assert not (output / "agent.safetensors").exists() and not (output / "logs").exists()
    with pytest.raises(GreencodeError, match="an interrupted run is here .*pass --resume to continue it"):
        AgentRun.start(output, run_settings(config, cache), overwrite=False, resume=False)
    with pytest.raises(GreencodeError, match=r"--resume with different settings \(net_arch\)"):
        AgentRun.start(output, run_settings(replace_agent(config, net_arch=[8]), cache), False, True)

    resumed = AgentRun.start(output, run_settings(config, cache), overwrite=False, resume=True)
    report = _train(cache, config, resumed)
    resumed.finish()
    assert 512 <= report["timesteps"] < 512 + 64 and (output / "agent.safetensors").is_file()  # whole rollouts
    assert not (output / ".run-in-progress").exists() and (output / "logs").is_dir()
    assert report["agent"] == str(output / "agent.safetensors")


def replace_agent(config, **keys):
    import dataclasses

    return dataclasses.replace(config, **keys)


def test_a_checkpoint_that_does_not_match_its_hash_is_never_loaded(tmp_path, monkeypatch):
    from train.agent.run import CHECKPOINT, AgentRun, run_settings

    output = tmp_path / "agent"
    run, cache, config, with_ctrl_c = _interrupted_agent_run(output)
    _train_until_ctrl_c(run, cache, config, with_ctrl_c, monkeypatch)
    checkpoint = run.staging / CHECKPOINT
    planted = bytearray(checkpoint.read_bytes())
    planted[-10] ^= 0xFF  # someone else's bytes in place of ours
    checkpoint.write_bytes(bytes(planted))
    with pytest.raises(GreencodeError, match="not the checkpoint this command saved .* it is not loaded"):
        AgentRun.start(output, run_settings(config, cache), overwrite=False, resume=True)


def test_an_interrupted_overwrite_leaves_the_old_agent_and_its_logs(tmp_path, monkeypatch):
    from train.agent.run import AgentRun, run_settings

    output = tmp_path / "agent"
    (output / "logs").mkdir(parents=True)
    (output / "agent.safetensors").write_bytes(b"the old agent")
    (output / "logs" / "progress.csv").write_text("the old run's log\n")
    (output / "notes.txt").write_text("the user's own file\n")
    run, cache, config, with_ctrl_c = _interrupted_agent_run(output, overwrite=True)
    _train_until_ctrl_c(run, cache, config, with_ctrl_c, monkeypatch)
    assert (output / "agent.safetensors").read_bytes() == b"the old agent"
    assert (output / "logs" / "progress.csv").read_text() == "the old run's log\n"
    assert not (output / "agent.json").exists()  # the new run's report is staged, not beside the old agent
    resumed = AgentRun.start(output, run_settings(config, cache), overwrite=False, resume=True)
    _train(cache, config, resumed)
    resumed.finish()
    assert (output / "agent.safetensors").read_bytes() != b"the old agent"
    assert "the old run's log" not in (output / "logs" / "progress.csv").read_text()
    assert (output / "notes.txt").read_text() == "the user's own file\n"


def test_cli_resume_without_a_run_is_one_line(tmp_path):
    from tests.cli import run_cli

    result = run_cli("train", "agent", "--resume", "--output", str(tmp_path / "agent"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"greencode: error: {tmp_path / 'agent' / '.run-in-progress'}: no interrupted agent run to resume (no "
        "checkpoint was saved); run without --resume"]
    assert not (tmp_path / "agent").exists()


# -- the trajectory cache: Ctrl-C keeps the recorded samples --------------------------------------------

def test_trajectory_build_resumes_after_ctrl_c_and_equals_an_uninterrupted_one(tmp_path):
    import numpy as np

    from greencode.config import load_config
    from tests.conftest import _load
    from tests.train.lite.test_finetune import _corpus
    from train.agent.trajectories import ensure_cache
    from train.agent.trajectory_resume import PARTIAL, PROGRESS

    loaded = _load("tiny-random-llama")
    corpus = _corpus(tmp_path)
    settings = load_config(None, {"data.corpus": str(corpus), "data.validation_fraction": 0.0,
                                  "data.test_fraction": 0.0, "agent.samples": 11, "agent.tokens_per_sample": 3,
                                  "agent.trajectories": str(tmp_path / "traj")})
    points = [4, 6, 10]

    def ctrl_c_after(samples: int):
        def progress(done, total):
            if done == samples:
                os.kill(os.getpid(), signal.SIGINT)
        return progress

    with pytest.raises(KeyboardInterrupt):
        ensure_cache(settings, loaded, points, progress=ctrl_c_after(9))
    import json

    kept = json.loads((tmp_path / "traj" / PARTIAL / PROGRESS).read_text())
    assert len(kept["sources"]) == 9  # every sample recorded before Ctrl-C, not only whole chunks
    done = []
    resumed = ensure_cache(settings, loaded, points, progress=lambda d, t: done.append(d))
    assert done == [10, 11]  # only the two missing samples ran the model
    assert not (tmp_path / "traj" / PARTIAL).exists()

    fresh_settings = replace(settings, agent={"trajectories": str(tmp_path / "fresh")})
    fresh = ensure_cache(fresh_settings, loaded, points)
    assert resumed.manifest["sample_sources"] == fresh.manifest["sample_sources"]
    for name in ("observations", "exit_top1", "final_top1", "sample"):
        assert np.array_equal(getattr(resumed, name), getattr(fresh, name)), name


def test_an_interrupted_trajectory_build_for_other_settings_is_one_line(tmp_path):
    from train.agent.trajectory_resume import PartialCache

    import numpy as np

    part = PartialCache(tmp_path, {"samples": 10})
    part.record([np.zeros((3, 4), np.float32)], [np.zeros(3, np.int64)], [0], [0],
                [{"file": "x", "context": [0, 1], "tokens": 1}])
    part.flush()
    with pytest.raises(GreencodeError, match=r"an interrupted build for other settings \(samples\) is here; pass "
                                             "--rebuild-trajectories"):
        PartialCache.open(tmp_path, {"samples": 20})
    assert PartialCache.open(tmp_path, {"samples": 20}, fresh=True).samples_kept == 0
