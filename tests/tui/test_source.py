"""Opening and saving the edited file: refusals are one clear line; saving is atomic and keeps the mode."""

from __future__ import annotations

import os
import stat

import pytest

from greencode.errors import GreencodeError
from tui.settings import policy_string, settings_from_config
from greencode.files.source import HIGHLIGHT_MAX_LINES, open_source, save_text
from tests.cli import run_cli


def test_language_follows_the_extension(tmp_path):
    for name, language in (("a.py", "python"), ("B.java", "java"), ("notes.txt", None), ("Makefile", None)):
        (tmp_path / name).write_text("x\n")
        assert open_source(tmp_path / name).language == language


def test_refusals_say_what_to_do(tmp_path):
    with pytest.raises(GreencodeError, match="--create"):
        open_source(tmp_path / "missing.py")
    with pytest.raises(GreencodeError, match="is a directory"):
        open_source(tmp_path)
    (tmp_path / "blob.bin").write_bytes(b"\x7fELF\x00\x00\x01")
    with pytest.raises(GreencodeError, match="binary"):
        open_source(tmp_path / "blob.bin")
    with pytest.raises(GreencodeError, match="does not exist either"):
        open_source(tmp_path / "nowhere" / "x.py")


def test_create_starts_empty_and_writes_on_save(tmp_path):
    path = tmp_path / "new.py"
    source = open_source(path, create=True)
    assert source.text == "" and not source.exists and not path.exists()
    save_text(source, "print(1)\n")
    assert path.read_text() == "print(1)\n"


def test_non_utf8_is_read_only_and_cannot_be_saved(tmp_path):
    path = tmp_path / "old.py"
    path.write_bytes(b"name = '\xff'\n")
    source = open_source(path)
    assert source.read_only and "UTF-8" in source.read_only_reason
    with pytest.raises(GreencodeError, match="not saved"):
        save_text(source, "anything")
    assert path.read_bytes() == b"name = '\xff'\n"


def test_save_is_atomic_keeps_mode_and_line_endings(tmp_path):
    path = tmp_path / "tool.py"
    path.write_bytes(b"a = 1\r\nb = 2\r\n")
    path.chmod(0o750)
    source = open_source(path)
    before_inode = path.stat().st_ino
    save_text(source, "a = 1\r\nb = 3\r\n")
    assert path.read_bytes() == b"a = 1\r\nb = 3\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o750
    assert path.stat().st_ino != before_inode  # a new file renamed over the old one, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["tool.py"]  # no temporary file left behind


def test_save_through_a_symlink_writes_the_target(tmp_path):
    target = tmp_path / "real.py"
    target.write_text("x = 1\n")
    link = tmp_path / "link.py"
    link.symlink_to(target)
    save_text(open_source(link), "x = 2\n")
    assert link.is_symlink() and target.read_text() == "x = 2\n"


def test_save_without_write_permission_fails_and_keeps_the_file(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "a.py"
    path.write_text("keep\n")
    source = open_source(path)
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root ignores permission bits (test_save_failure_keeps_the_buffer covers it)
            pytest.skip("running as root: a read-only directory is still writable")
        with pytest.raises(GreencodeError, match="not saved"):
            save_text(source, "lost?\n")
        assert path.read_text() == "keep\n"
        assert [p.name for p in folder.iterdir()] == ["a.py"]
    finally:
        folder.chmod(0o755)


def test_save_into_a_vanished_directory_fails_cleanly(tmp_path):
    folder = tmp_path / "gone"
    folder.mkdir()
    (folder / "a.py").write_text("x\n")
    source = open_source(folder / "a.py")
    (folder / "a.py").unlink()
    folder.rmdir()
    with pytest.raises(GreencodeError, match="not saved.*still in the editor"):
        save_text(source, "y\n")


def test_huge_file_turns_highlighting_off(tmp_path):
    path = tmp_path / "big.py"
    path.write_text("x = 1\n" * (HIGHLIGHT_MAX_LINES + 1))
    source = open_source(path)
    assert source.language is None and "highlighting off" in source.note


def test_settings_take_tui_keys_then_fall_back(tmp_path, monkeypatch):
    from greencode.config import load_config

    monkeypatch.chdir(tmp_path)  # built-in defaults, not the ./greencode.toml being edited next door

    settings = settings_from_config(load_config(None, {"engine.policy": "agent:0.8", "tui.idle_ms": 0}))
    assert (settings.policy_kind, settings.threshold, settings.idle_ms) == ("agent", 0.8, 0)
    settings = settings_from_config(load_config(None, {"tui.policy": "confidence:0.7"}), threshold=0.5)
    assert (settings.policy_kind, settings.threshold) == ("confidence", 0.5)
    settings = settings_from_config(load_config(None, {"tui.policy": "fixed:14"}))
    assert (settings.policy_kind, settings.policy_arg) == ("fixed", "14")
    settings = settings_from_config(load_config(None, {"tui.policy": "agent:0.8:0.5:2"}), threshold=0.7)
    assert (settings.threshold, policy_string("agent", settings.threshold, settings.policy_arg)) == (0.7, "agent:0.7:0.5:2")
    with pytest.raises(GreencodeError, match="unknown policy"):
        settings_from_config(load_config(None, {"tui.policy": "fastest"}))
    with pytest.raises(GreencodeError, match=r"\[0, 1\]"):
        settings_from_config(load_config(), threshold=1.5)


@pytest.mark.parametrize("args, expected", [
    (["missing.py"], "--create"),
    (["."], "is a directory"),
    (["blob.bin"], "binary"),
    (["ok.py", "--policy", "fastest"], "unknown policy"),
    (["ok.py", "--threshold", "3"], "[0, 1]"),
    (["ok.py", "--agent", "no-agent.safetensors"], "no such file"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, expected):
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01")
    (tmp_path / "ok.py").write_text("x = 1\n")
    result = run_cli("tui", *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("greencode: error:") and expected in lines[0]


def test_tcss_band_colours_match_the_shared_palette():
    import re
    from pathlib import Path

    from greencode.exits.bands import BAND_COLOURS

    tcss = (Path(__file__).resolve().parents[2] / "tui" / "app.tcss").read_text()
    found = dict(re.findall(r"\$band-(\d): (#[0-9a-fA-F]{6});", tcss))
    assert tuple(found[str(i)] for i in range(len(BAND_COLOURS))) == BAND_COLOURS
