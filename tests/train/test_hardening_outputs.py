"""Hardening (#26) of the trainers' output folders: one lock for every trainer (trajectories included),
folders that cannot be written refused before any work, non-positive step counts refused, LoRA seeded."""

from __future__ import annotations


import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

from greencode.errors import GreencodeError
from tests.cli import run_cli as greencode
from tests.folders import unwritable
from tests.train.lite.test_finetune import _config
from train.lite.finetune import CHECKPOINTS, LORA_ADAPTER, run_finetune
from train.run_output import output_lock

QUIET = {"echo": lambda _: None}
CORPUS = {f"m{i}.py": "".join(f"def f{k}(a, b):\n    return a * {k} + b - {i}\n\n" for k in range(30)) for i in range(3)}


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for name, text in CORPUS.items():
        (root / name).write_text(text)
    return root


def _trajectories(corpus, output, samples):
    return greencode("train", "trajectories", "--model", "tiny-random-llama", "--samples", samples, "--tokens", 2,
                     "--output", output, "--data.corpus", corpus, "--data.validation_fraction", 0,
                     "--data.test_fraction", 0)


# -- row 3: `train trajectories` takes the trainers' lock -----------------------------------------------

def test_a_trajectory_build_into_a_folder_in_use_is_refused(tmp_path, corpus):
    out = tmp_path / "traj"
    with output_lock(out, "greencode train trajectories"):  # another build holds the folder
        ran = _trajectories(corpus, out, 2)
        assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1
        assert "another `greencode train trajectories` (pid" in ran.stderr and "is using this folder" in ran.stderr
        assert sorted(entry.name for entry in out.iterdir()) == [".greencode.lock"]  # nothing written
    built = _trajectories(corpus, out, 2)
    assert built.returncode == 0 and "2 samples" in built.stdout


# -- row 5: output folders checked before any work ------------------------------------------------------

@pytest.mark.parametrize("trainer", [["finetune", "--model", "tiny-random-llama"], ["agent"], ["default"],
                                     ["trajectories", "--model", "tiny-random-llama"]])
def test_an_output_that_is_a_file_is_one_line(tmp_path, trainer):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    for output, message in ((taken, f"{taken}: exists and is not a directory"),
                            (taken / "run", f"{taken / 'run'}: {taken} is a file, not a directory")):
        ran = greencode("train", *trainer, "--output", output, cwd=tmp_path)
        assert ran.returncode == 2 and ran.stderr.strip().splitlines() == [f"greencode: error: {message}; choose another --output"]
    assert taken.read_text() == "mine"


def test_an_unwritable_output_is_one_line(tmp_path):
    with unwritable(tmp_path / "locked") as locked:
        for output, what in ((locked, "is not writable"), (locked / "run", f"cannot be created ({locked} is not "
                                                                             "writable)")):
            ran = greencode("train", "finetune", "--model", "tiny-random-llama", "--output", output)
            assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1
            assert ran.stderr.strip().splitlines()[0].startswith(f"greencode: error: {output}: {what}: ")
            assert ran.stderr.strip().splitlines()[0].endswith("; choose another --output")


class CountSteps(TrainerCallback):
    steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        CountSteps.steps += 1


def test_a_resume_whose_checkpoints_cannot_be_written_trains_nothing(tmp_path):
    out = tmp_path / "lite"
    config = _config(tmp_path, save_steps=1)
    run_finetune(config, output=out, max_steps=1, **QUIET)
    CountSteps.steps = 0
    with unwritable(out / CHECKPOINTS):
        with pytest.raises(GreencodeError, match=rf"{out / CHECKPOINTS}: is not writable: .*; choose another "
                                                 r"--output \(its checkpoints/ folder, which --resume writes\)"):
            run_finetune(config, output=out, max_steps=3, resume=True, callbacks=(CountSteps(),), **QUIET)
    assert CountSteps.steps == 0


# -- row 10: non-positive step counts -------------------------------------------------------------------

@pytest.mark.parametrize("args, key, bound", [
    (["agent", "--timesteps", "0"], "agent.timesteps", "[1, inf]"),
    (["agent", "--timesteps", "-5"], "agent.timesteps", "[1, inf]"),
    (["finetune", "--max-steps", "-5"], "finetune.max_steps", "[-1, inf]"),
])
def test_non_positive_steps_are_refused(tmp_path, args, key, bound):
    ran = greencode("train", *args, "--output", tmp_path / "out")
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1
    assert f"'{key}' = {args[-1]} is out of range; allowed: {bound}" in ran.stderr
    assert not (tmp_path / "out").exists()


# -- row 12: LoRA is set up after seeding ---------------------------------------------------------------

def test_two_lora_runs_with_one_seed_are_equal(tmp_path):
    config = _config(tmp_path, lora=True, lora_rank=4)
    adapters = []
    for name in ("one", "two"):
        run_finetune(config, output=tmp_path / name, max_steps=1, **QUIET)
        adapters.append(load_file(tmp_path / name / LORA_ADAPTER / "adapter_model.safetensors"))
    assert adapters[0].keys() == adapters[1].keys()
    assert all(adapters[0][key].equal(adapters[1][key]) for key in adapters[0])


# -- found by the bad-input sweep ------------------------------------------------------------------------

# Small enough that, without the fixes, the run ends (and the test fails) instead of training for long.
SMALL_AGENT = ["--model", "tiny-random-llama", "--agent.samples", 1, "--agent.tokens_per_sample", 1, "--timesteps", 64,
               "--agent.n_steps", 64, "--agent.batch_size", 64]

def test_an_agent_output_holding_someone_elses_files_is_refused(tmp_path):
    taken = tmp_path / "project"
    (taken / "logs").mkdir(parents=True)
    (taken / "logs" / "mine.txt").write_text("mine")  # `train agent` would replace a logs/ folder when done
    ran = greencode("train", "agent", *SMALL_AGENT, "--output", taken, "--trajectories", tmp_path / "traj")
    assert ran.returncode == 2 and ran.stderr.strip().splitlines() == [
        f"greencode: error: {taken}: already exists; pass --overwrite to replace it, or another --output"]
    assert (taken / "logs" / "mine.txt").read_text() == "mine" and not (tmp_path / "traj").exists()


@pytest.mark.parametrize("arch", ["[-1]", "[0, 64]", "[1.5]", '["x"]'])
def test_an_agent_net_arch_that_is_not_layer_widths_is_one_line(tmp_path, arch):
    ran = greencode("train", "agent", *SMALL_AGENT, "--agent.net_arch", arch, "--output", tmp_path / "out",
                    "--trajectories", tmp_path / "traj")
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1
    assert "'agent.net_arch' = " in ran.stderr and "each must be int in [1, 65536]" in ran.stderr
