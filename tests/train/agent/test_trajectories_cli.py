"""`greencode train trajectories` and `greencode train agent` as a user runs them (real processes)."""

import json

import pytest

from train.agent.trajectories import save_cache, synthetic_cache
from tests.cli import run_cli

CORPUS = {f"m{i}.py": "".join(f"def f{k}(a, b):\n    return a * {k} + b - {i}\n\n" for k in range(30)) for i in range(3)}
SPLIT = ["--data.validation_fraction", "0", "--data.test_fraction", "0"]


def greencode(*args, cwd):
    return run_cli(*args, cwd=cwd)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "corpus").mkdir()
    for name, text in CORPUS.items():
        (root / "corpus" / name).write_text(text)
    result = greencode("train", "trajectories", "--model", "tiny-random-llama", "--samples", "3", "--tokens", "4",
                       "--output", "traj", "--data.corpus", "corpus", *SPLIT, cwd=root)
    assert result.returncode == 0, result.stderr
    assert "traj: 3 samples, 12 tokens, model tiny-random-llama, exit points [4, 6, 10]" in result.stdout
    return root


def test_train_agent_trains_on_the_cache_and_writes_the_agent(workdir):
    result = greencode("train", "agent", "--model", "tiny-random-llama", "--trajectories", "traj",
                       "--timesteps", "256", "--output", "out", "--agent.n_steps", "128", "--agent.batch_size", "64",
                       cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "T=0.9: mean exit layer" in result.stdout
    report = json.loads((workdir / "out" / "agent.json").read_text())
    assert report["timesteps"] == 256 and report["trajectories"]["tokens"] == 12
    assert (workdir / "out" / "agent.safetensors").is_file()
    again = greencode("train", "agent", "--model", "tiny-random-llama", "--trajectories", "traj", "--output", "out",
                      cwd=workdir)
    assert again.returncode == 2 and again.stderr.strip() == (
        "greencode: error: out/agent.safetensors: already exists; pass --overwrite to replace it, or another --output")


@pytest.mark.parametrize("args, message", [
    (["--model", "tiny-random-opt"], "traj: the trajectory cache was built for model 'tiny-random-llama', not "
                                     "'tiny-random-opt'"),
    (["--exits.points", "[4, 8]"], "traj: the trajectory cache has exit points [4, 6, 10], the model uses [4, 8]"),
    (["--agent.reward.alpha", "0.9", "--agent.reward.beta", "0.2"], "'agent.reward.alpha' (0.9) must be <= "
                                                                   "'agent.reward.beta' (0.2)"),
    (["--agent.reward.gamma", "1.5"], "'agent.reward.gamma' = 1.5 is out of range; allowed: [0.0, 1.0]"),
])
def test_bad_input_is_one_clear_line_and_the_cache_is_kept(workdir, args, message):
    before = (workdir / "traj" / "manifest.json").read_bytes()
    result = greencode("train", "agent", "--trajectories", "traj", "--output", "bad", *args,
                       *(["--model", "tiny-random-llama"] if "--model" not in args else []), cwd=workdir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("greencode: error: ") and message in lines[0], result.stderr
    assert (workdir / "traj" / "manifest.json").read_bytes() == before
    assert not (workdir / "bad").exists()


def test_an_empty_cache_is_one_clear_line(tmp_path):
    save_cache(synthetic_cache(samples=0), tmp_path / "empty")
    result = greencode("train", "agent", "--model", "tiny-random-llama", "--trajectories", "empty", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("greencode: error: empty: the trajectory cache is empty (0 tokens); rebuild it "
                                     "with `greencode train trajectories --force`")
