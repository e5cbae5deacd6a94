"""Hardening (#16): the TUI's save loses nothing another program wrote, and keeps owner, links and line endings."""

from __future__ import annotations

import os

import pytest

from greencode.files.source import FileChangedOnDisk, open_source, restore_line_endings, save_text
from tests.tui.helpers import EXAMPLE, make_app, wait_for
from tui.editor import CodeEditor
from tui.screens import FileChangedScreen

SIZE = (110, 36)


def _someone_else_writes(path, text: str) -> None:
    path.write_text(text)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # a different mtime even on coarse clocks


# -- changes made by another program -----------------------------------------------------------------

def test_save_refuses_to_overwrite_a_change_made_since_open(tmp_path):
    path = tmp_path / "a.py"
    path.write_text("x = 1\n")
    source = open_source(path)
    _someone_else_writes(path, "x = 'theirs'\n")
    with pytest.raises(FileChangedOnDisk, match="a.py was changed by another program since it was opened"):
        save_text(source, "x = 'mine'\n")
    assert path.read_text() == "x = 'theirs'\n"
    save_text(source, "x = 'mine'\n", overwrite_changes=True)
    assert path.read_text() == "x = 'mine'\n"


def test_same_content_with_a_new_mtime_is_not_a_change(tmp_path):
    path = tmp_path / "a.py"
    path.write_text("x = 1\n")
    source = open_source(path)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # touched, not changed
    save_text(source, "x = 2\n")
    assert path.read_text() == "x = 2\n"


def test_a_second_save_compares_with_the_first_one(tmp_path):
    path = tmp_path / "a.py"
    path.write_text("x = 1\n")
    saved = save_text(open_source(path), "x = 2\n")
    save_text(saved, "x = 3\n")  # our own write is not someone else's change
    _someone_else_writes(path, "x = 'theirs'\n")
    with pytest.raises(FileChangedOnDisk):
        save_text(saved, "x = 4\n")


def test_a_file_created_by_someone_else_after_create_is_a_change(tmp_path):
    path = tmp_path / "new.py"
    source = open_source(path, create=True)
    path.write_text("theirs\n")
    with pytest.raises(FileChangedOnDisk, match="was created by another program"):
        save_text(source, "mine\n")


@pytest.mark.asyncio
async def test_tui_asks_and_cancel_keeps_both(tmp_path):
    app, _, path = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        _someone_else_writes(path, "theirs = 1\n")
        await pilot.press("z", "ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, FileChangedScreen), what="the question")
        assert "was changed by another program" in str(app.screen.query_one("#changed-question").render())
        await pilot.press("escape")
        assert not isinstance(app.screen, FileChangedScreen) and app.dirty
        assert app.query_one(CodeEditor).text == EXAMPLE + "z"
    assert path.read_text() == "theirs = 1\n"


@pytest.mark.asyncio
async def test_tui_overwrite_writes_the_editor_text(tmp_path):
    app, _, path = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        _someone_else_writes(path, "theirs = 1\n")
        await pilot.press("z", "ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, FileChangedScreen), what="the question")
        await pilot.press("o")
        await wait_for(pilot, lambda: not app.dirty, what="the save")
    assert path.read_text() == EXAMPLE + "z"


@pytest.mark.asyncio
async def test_tui_reload_shows_the_other_programs_text(tmp_path):
    app, _, path = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        _someone_else_writes(path, "theirs = 1\n")
        await pilot.press("z", "ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, FileChangedScreen), what="the question")
        await pilot.click("#reload")
        await wait_for(pilot, lambda: app.query_one(CodeEditor).text == "theirs = 1\n", what="the reload")
        await pilot.pause()
        assert not app.dirty and "[modified]" not in app.title
        await pilot.press("end", "!", "ctrl+s")  # the reloaded file is the new baseline: no question now
        await wait_for(pilot, lambda: not app.dirty, what="the save")
    assert path.read_text() == "theirs = 1!\n"


# -- owner, group, hard links ------------------------------------------------------------------------

def test_owner_and_group_are_kept(tmp_path):
    path = tmp_path / "a.py"
    path.write_text("x = 1\n")
    try:
        os.chown(path, 4242, 4343)
    except PermissionError:
        pytest.skip("only root can give a file to another user")
    save_text(open_source(path), "x = 2\n")
    info = os.stat(path)
    assert (info.st_uid, info.st_gid) == (4242, 4343) and path.read_text() == "x = 2\n"


def test_mode_is_kept(tmp_path):
    path = tmp_path / "run.py"
    path.write_text("x = 1\n")
    os.chmod(path, 0o751)
    save_text(open_source(path), "x = 2\n")
    assert os.stat(path).st_mode & 0o777 == 0o751


def test_save_writes_through_a_hard_link(tmp_path):
    path = tmp_path / "a.py"
    path.write_text("x = 1\n")
    other = tmp_path / "other-name.py"
    os.link(path, other)
    save_text(open_source(path), "x = 2\n")
    assert other.read_text() == "x = 2\n" and os.stat(path).st_ino == os.stat(other).st_ino
    assert os.stat(path).st_nlink == 2
    assert not list(tmp_path.glob(".*greencode-tmp"))  # the recovery copy is gone once the write is complete


# -- line endings ------------------------------------------------------------------------------------

def test_mixed_line_endings_are_kept_per_line(tmp_path):
    path = tmp_path / "mixed.py"
    original = b"a = 1\r\nb = 2\nc = 3\r\nd = 4\n"
    path.write_bytes(original)
    source = open_source(path)
    editor_text = "a = 1\r\nb = 2\r\nc = 33\r\nd = 4\r\n"  # the editor holds one style (CRLF, detected first)
    save_text(source, editor_text)
    assert path.read_bytes() == b"a = 1\r\nb = 2\nc = 33\r\nd = 4\n"


def test_inserted_and_deleted_lines_do_not_shift_endings():
    original = "one\r\ntwo\nthree\nfour\n"
    edited = "zero\none\nthree\nfour\nfive\n"  # inserted zero, deleted two, appended five
    # kept lines keep theirs; new lines get the most common ending (LF here)
    assert restore_line_endings(original, edited) == "zero\none\r\nthree\nfour\nfive\n"


def test_form_feeds_and_lone_cr_survive_the_editor(tmp_path):
    path = tmp_path / "ff.py"
    path.write_bytes(b"import os\n\x0c\ndef f():\r    pass\n")
    source = open_source(path)
    save_text(source, "import os\n\n\ndef f():\n    return 1\n")  # the editor shows the form feed as a line break
    assert path.read_bytes() == b"import os\n\x0c\ndef f():\r    return 1\n"


def test_uniform_files_are_untouched_by_the_restore():
    assert restore_line_endings("a\r\nb\r\n", "a\r\nb\r\nc\r\n") == "a\r\nb\r\nc\r\n"
    assert restore_line_endings("a\nb", "a\nb\nc") == "a\nb\nc"


@pytest.mark.asyncio
async def test_tui_save_keeps_mixed_endings(tmp_path):
    app, _, path = make_app(tmp_path, text="")
    path.write_bytes(b"a = 1\r\nb = 2\nc = 3\r\n")
    from greencode.files.source import open_source as reopen
    from tui.app import GreencodeApp
    from tui.settings import TuiSettings
    from tests.tui.fake_engine import FakeEngine

    app = GreencodeApp(reopen(path), TuiSettings(idle_ms=0), FakeEngine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("x", "ctrl+s")
        await wait_for(pilot, lambda: not app.dirty, what="the save")
    saved = path.read_bytes()
    assert saved.count(b"x") == 1 and saved.replace(b"x", b"") == b"a = 1\r\nb = 2\nc = 3\r\n"
