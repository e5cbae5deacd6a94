"""The output folder of a LITE run: what may be written over, resumed, or must be refused.

OUTPUT holds the model files, greencode.json (written last), run.json (measured before training) and
checkpoints/ (the Trainer's); a lock and staging folders are housekeeping (train/run_output.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from greencode.errors import GreencodeError
from greencode.files.paths import check_writable
from train.run_output import is_housekeeping, resume_or_overwrite

GREENCODE_JSON = "greencode.json"
RUN_JSON = "run.json"  # measured before training; read back on --resume
CHECKPOINTS = "checkpoints"


def last_checkpoint(output: Path) -> Path | None:
    found = sorted((output / CHECKPOINTS).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return found[-1] if found else None


def _stopped_before_first_checkpoint(output: Path) -> bool:
    """run.json written, then stopped (a double Ctrl-C) before any checkpoint or model was saved."""
    return ((output / RUN_JSON).is_file() and last_checkpoint(output) is None
            and not (output / GREENCODE_JSON).is_file())


def _leftovers_only(output: Path) -> bool:
    """The folder holds nothing but what an unfinished run writes (run.json, empty checkpoints, staging)."""
    return all(is_housekeeping(entry.name) or entry.name in (RUN_JSON, CHECKPOINTS) or entry.name.startswith(".saving-")
               for entry in output.iterdir())


def check_output(output: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write over an existing output unless asked to resume or overwrite it (train/run_output.py's
    rule); a --resume also needs checkpoints/ writable, checked before any training."""
    if resume and not overwrite and output.is_dir() and _stopped_before_first_checkpoint(output):
        raise GreencodeError(f"{output}: the run stopped before its first checkpoint, so there is nothing to "
                             "resume; start it again without --resume")
    resumable = output.is_dir() and last_checkpoint(output) is not None and (output / RUN_JSON).is_file()
    if not resume and output.is_dir() and _stopped_before_first_checkpoint(output) and _leftovers_only(output):
        overwrite = True  # only an unfinished run's notes: nothing of value to keep, start it again
    used = output.is_dir() and any(not is_housekeeping(entry.name) for entry in output.iterdir())
    finished = (output / GREENCODE_JSON).is_file()  # a finished run's checkpoint can still be trained further
    resume_or_overwrite(resume, overwrite, interrupted=str(output) if resumable and (resume or not finished) else None,
                        results=output if used else None, resumable_results=resumable,
                        nothing_to_resume=f"{output}: no checkpoint to resume from (expected {output / CHECKPOINTS}/"
                                          "checkpoint-N)")
    if resume:
        check_writable(output / CHECKPOINTS, "--output (its checkpoints/ folder, which --resume writes)")
    elif used:  # --overwrite: the new run starts clean; the old model files stay until the new ones replace them
        shutil.rmtree(output / CHECKPOINTS, ignore_errors=True)
        (output / RUN_JSON).unlink(missing_ok=True)


def check_steps_left(output: Path, max_steps: int) -> None:
    """Resuming a run whose checkpoint already reached its end would train one step more and rewrite the model."""
    checkpoint = last_checkpoint(output)
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError, TypeError):
        return  # the Trainer itself reports an unreadable checkpoint
    step, planned = int(state.get("global_step", 0)), int(state.get("max_steps", 0))
    limit = max_steps if max_steps > 0 else planned
    if limit > 0 and step >= limit:
        raise GreencodeError(f"{output}: the checkpoint is at step {step}, which already reaches "
                             f"{'max_steps ' + str(max_steps) if max_steps > 0 else 'the end of its epochs'}; "
                             "pass a larger --max-steps to train further")
