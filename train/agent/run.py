"""`greencode train agent` runs that survive Ctrl-C and never mix two runs' files.

The run is built in OUTPUT/.run-in-progress/ (the staging folder): logs, episodes, the report and the
agent land there, and only a finished run is moved into OUTPUT, file by file with agent.safetensors
last. An interrupted --overwrite therefore leaves the old agent with its own logs, untouched.

PPO is checkpointed into the staging folder (SB3's own save: a zip that holds pickles) at the end of
a rollout at most every CHECKPOINT_SECONDS, and on Ctrl-C. Its SHA-256 goes into the staging folder's
run.json with the settings it was trained with; `--resume` loads the checkpoint only if its hash
matches what this command recorded, so no pickle this command did not write is ever loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from greencode.files.atomic import atomic_write, atomic_write_text
from greencode.errors import GreencodeError
from train.run_output import is_housekeeping, resume_or_overwrite

STAGING = ".run-in-progress"
RUN_JSON = "run.json"
CHECKPOINT = "ppo-checkpoint.zip"
CHECKPOINT_SECONDS = 60.0
ARTIFACTS = ("logs", "episodes.csv", "reward_curve.png", "exit_histogram.png", "agent.json", "agent.safetensors")
RESUME_KEYS = ("net_arch", "n_steps", "batch_size", "n_epochs", "learning_rate", "gamma", "n_envs",
               "position_feature", "seed", "reward", "cache")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_settings(agent_config, cache) -> dict:
    """What a checkpoint must have been trained with to be continued (timesteps may grow)."""
    settings = {key: value for key, value in dataclasses.asdict(agent_config).items() if key in RESUME_KEYS}
    settings["cache"] = {"model": cache.model_name, "tokens": cache.num_tokens,
                         "exit_points": list(cache.exit_points)}
    return json.loads(json.dumps(settings))


class AgentRun:
    """The staging folder of one run, its checkpoint and run.json."""

    def __init__(self, output: Path, settings: dict, recorded: dict | None = None,
                 every_s: float = CHECKPOINT_SECONDS):
        self.output, self.staging = output, output / STAGING
        self.settings, self.recorded, self.every_s = settings, recorded or {}, every_s

    @property
    def resuming(self) -> bool:
        return bool(self.recorded.get("checkpoint"))

    @property
    def episodes(self) -> list[tuple[int, float]]:
        return [tuple(row) for row in self.recorded.get("episodes", [])]

    @classmethod
    def start(cls, output: str | Path, settings: dict | None, overwrite: bool, resume: bool,
              every_s: float = CHECKPOINT_SECONDS) -> "AgentRun":
        """Check OUTPUT, and open (or continue) its staging folder. With settings None only the checks that
        need no trajectory cache run, and nothing is written (call it before any long work)."""
        output = Path(output)
        run = cls(output, settings, every_s=every_s)
        recorded = run._read_recorded()
        existing = output / "agent.safetensors"
        # Without our agent, anything but a staged run is someone else's: finishing would replace a logs/ of theirs.
        if not existing.exists() and output.is_dir() and any(entry.name != STAGING and not is_housekeeping(entry.name)
                                                             for entry in output.iterdir()):
            existing = output
        # Without --resume any staged run counts (its files are not ours to drop); --resume needs its checkpoint.
        staged = recorded.get("checkpoint") if resume else recorded
        resume_or_overwrite(resume, overwrite, interrupted=str(run.staging) if staged else None,
                            progress=f"{recorded.get('timesteps', 0)} steps", results=existing if existing.exists() else None,
                            nothing_to_resume=f"{run.staging}: no interrupted agent run to resume (no checkpoint was "
                                              "saved); run without --resume")
        if resume:
            if settings is None:
                return run
            changed = [key for key in RESUME_KEYS if recorded.get("settings", {}).get(key) != settings.get(key)]
            if changed:
                raise GreencodeError(f"{run.staging}: --resume with different settings ({', '.join(changed)}) than "
                                     "the checkpoint; use the same config, or start over with --overwrite")
            run.recorded = recorded
            run._verified_checkpoint()
            return run
        if settings is None:
            return run
        shutil.rmtree(run.staging, ignore_errors=True)
        run.staging.mkdir(parents=True)
        run._write_recorded({"settings": settings, "overwrite": overwrite, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return run

    def _read_recorded(self) -> dict:
        path = self.staging / RUN_JSON
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise GreencodeError(f"{path}: unreadable ({exc}); start over with --overwrite") from None

    def _write_recorded(self, recorded: dict) -> None:
        self.recorded = recorded
        atomic_write_text(self.staging / RUN_JSON, json.dumps(recorded, indent=1))

    def _verified_checkpoint(self) -> Path:
        path = self.staging / self.recorded["checkpoint"]["file"]
        if not path.is_file() or _sha256(path) != self.recorded["checkpoint"]["sha256"]:
            raise GreencodeError(f"{path}: not the checkpoint this command saved (its SHA-256 differs from the one "
                                 f"in {RUN_JSON}, or it is missing); it is not loaded: start over with --overwrite")
        return path

    # -- PPO ------------------------------------------------------------------------------------------

    def load(self, env, agent_config):
        """The checkpointed PPO model (hash checked again just before loading)."""
        from stable_baselines3 import PPO

        from train.agent.ppo import linear_schedule

        schedule = linear_schedule(agent_config.learning_rate)
        return PPO.load(str(self._verified_checkpoint()), env=env, device="cpu",
                        custom_objects={"learning_rate": schedule, "lr_schedule": schedule})

    def save(self, model, episodes: list) -> None:
        """Checkpoint atomically, then record its hash (a checkpoint without a matching record is never loaded)."""
        path = self.staging / CHECKPOINT
        atomic_write(path, lambda temporary: model.save(str(temporary)) if temporary.suffix == ".zip"
                     else _save_zip(model, temporary))
        self._write_recorded({**self.recorded, "checkpoint": {"file": CHECKPOINT, "sha256": _sha256(path)},
                              "timesteps": int(model.num_timesteps), "episodes": [list(row) for row in episodes],
                              "saved": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def callback(self, episode_log):
        """An SB3 callback that checkpoints at the end of a rollout, at most every `every_s` seconds."""
        from stable_baselines3.common.callbacks import BaseCallback

        run = self

        class Checkpoint(BaseCallback):
            last = time.monotonic()

            def _on_step(self) -> bool:
                return True

            def _on_rollout_end(self) -> None:
                if time.monotonic() - Checkpoint.last >= run.every_s:
                    run.save(self.model, episode_log.episodes)
                    Checkpoint.last = time.monotonic()

        return Checkpoint()

    # -- the end ---------------------------------------------------------------------------------------

    def finish(self) -> None:
        """Move the finished run's files into OUTPUT (agent.safetensors last) and drop the staging folder."""
        for name in ARTIFACTS:
            source, target = self.staging / name, self.output / name
            if not source.exists():
                continue
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(source, target)
        shutil.rmtree(self.staging, ignore_errors=True)


def _save_zip(model, temporary: Path) -> None:
    """SB3 appends .zip to a path without it: save under a .zip name, then move it to `temporary`."""
    named = temporary.with_name(temporary.name + ".zip")
    try:
        model.save(str(named))
        os.replace(named, temporary)
    finally:
        named.unlink(missing_ok=True)
