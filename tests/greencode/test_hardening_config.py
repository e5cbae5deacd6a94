"""Hardening (#16): the config file, the fallback cache dir and Ctrl-C in the CLI."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from greencode.files import paths
from greencode.config import load_config
from greencode.errors import GreencodeError
from tests.cli import REPO, run_cli

MAX_CONFIG_BYTES = 1 << 20


@pytest.mark.parametrize("toml, key", [
    ("[engine]\ntemperature = nan\n", "engine.temperature"),
    ("[energy]\nwatts = inf\n", "energy.watts"),
    ("[agent]\nthreshold = -nan\n", "agent.threshold"),
    ("[eval]\nthresholds = [0.6, inf]\n", "eval.thresholds"),
    ("[finetune]\nlearning_rate = -inf\n", "finetune.learning_rate"),
])
def test_non_finite_numbers_are_refused_by_key(tmp_path, toml, key):
    path = tmp_path / "greencode.toml"
    path.write_text(toml)
    with pytest.raises(GreencodeError, match=f"'{key}' = .* is not a finite number") as info:
        load_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_non_finite_override_on_the_command_line_is_refused():
    with pytest.raises(GreencodeError, match="'energy.watts' = inf is not a finite number"):
        load_config(None, {"energy.watts": float("inf")})


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_not_a_config(target):
    if not Path(target).exists():
        pytest.skip(f"{target} is missing here")
    with pytest.raises(GreencodeError, match="must be a regular file"):
        load_config(target)


def test_a_fifo_or_directory_is_not_a_config(tmp_path):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    with pytest.raises(GreencodeError, match="must be a regular file"):
        load_config(fifo)  # opened without waiting for a writer
    with pytest.raises(GreencodeError, match="must be a regular file"):
        load_config(tmp_path)


def test_a_config_over_one_mib_is_refused_without_reading_it_all(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(GreencodeError, match="larger than 1048576 bytes"):
        load_config(big)


def test_cli_on_dev_zero_is_one_line_and_exit_2():
    result = run_cli("-c", "/dev/zero", "info", cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "greencode: error: /dev/zero: a config must be a regular file (this is a device, pipe or directory); "
        "pass --config FILE.toml"]


def test_energy_watts_inf_never_reaches_json(tmp_path):
    path = tmp_path / "greencode.toml"
    path.write_text("[energy]\nwatts = inf\n")
    result = run_cli("-c", str(path), "info", "--json")
    assert result.returncode == 2 and "Infinity" not in result.stdout
    assert "'energy.watts' = inf is not a finite number" in result.stderr


# -- the fallback cache dir ------------------------------------------------------------------------

@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / f"greencode-cache-{os.getuid()}"


def test_fallback_cache_is_created_0700(private_tmp, monkeypatch, tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache should be")
    monkeypatch.setenv("GREENCODE_CACHE", str(blocked / "cache"))
    chosen = paths.cache_dir()
    assert chosen == private_tmp and stat.S_IMODE(os.lstat(chosen).st_mode) == 0o700


def test_fallback_cache_that_is_a_symlink_is_refused(private_tmp, tmp_path, capsys):
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "smollm2-135m-instruct").mkdir()
    private_tmp.symlink_to(planted)
    chosen = paths.private_temp_dir()
    assert chosen != private_tmp and chosen.is_dir() and not chosen.is_symlink()
    assert stat.S_IMODE(os.lstat(chosen).st_mode) == 0o700 and not any(chosen.iterdir())
    assert "is not a directory of yours" in capsys.readouterr().err


def test_fallback_cache_owned_by_another_user_is_refused(private_tmp):
    private_tmp.mkdir(mode=0o777)
    try:
        os.chown(private_tmp, os.getuid() + 4242, -1)
    except PermissionError:
        pytest.skip("only root can hand a directory to another user")
    chosen = paths.private_temp_dir()
    assert chosen != private_tmp and os.lstat(chosen).st_uid == os.getuid()


def test_own_fallback_cache_left_open_to_others_is_closed(private_tmp):
    private_tmp.mkdir()
    os.chmod(private_tmp, 0o777)
    assert paths.private_temp_dir() == private_tmp
    assert stat.S_IMODE(os.lstat(private_tmp).st_mode) == 0o700


# -- Ctrl-C ------------------------------------------------------------------------------------------

def test_ctrl_c_in_a_command_prints_interrupted_and_exits_130(monkeypatch):
    # A command body interrupted by Ctrl-C (KeyboardInterrupt where the model would load).
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr("greencode.info.model_info", interrupted)
    result = run_cli("info")
    assert result.returncode == 130
    assert result.stderr.splitlines() == ["greencode: interrupted"] and result.stdout == ""


