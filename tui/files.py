"""Saving and quitting, mixed into GreencodeApp: atomic saves (greencode.files.source), a file another program
changed is never overwritten unasked, and unsaved changes are never lost on quit."""

from __future__ import annotations

import dataclasses

from textual.widgets import TextArea

from greencode.errors import GreencodeError
from greencode.files.source import FileChangedOnDisk, open_source, save_text
from tui.screens import ConfirmQuitScreen, FileChangedScreen


class FileActions:
    """Needs the app's source, editor and dirty flag."""

    def action_save(self, overwrite_changes: bool = False) -> bool:
        try:
            self.source = save_text(self.source, self.editor.text, overwrite_changes)
        except FileChangedOnDisk as exc:  # another program wrote the file: ask before anything is lost
            if not isinstance(self.screen, FileChangedScreen):
                self.push_screen(FileChangedScreen(str(exc)), self._resolve_file_change)
            return False
        except GreencodeError as exc:
            self.notify(str(exc), title="not saved", severity="error", timeout=12)
            return False
        self.dirty = False
        self._update_title()
        self.notify(f"saved {self.source.path}", timeout=3)
        return True

    def _resolve_file_change(self, choice: str | None) -> None:
        if choice == "overwrite":
            self.action_save(overwrite_changes=True)
        elif choice == "reload":
            try:
                fresh = open_source(self.source.path)
            except GreencodeError as exc:
                self.notify(str(exc), title="not reloaded", severity="error", timeout=12)
                return
            self.source = dataclasses.replace(fresh, shown=self.source.shown)
            with self.editor.prevent(TextArea.Changed):
                self.editor.load_text(fresh.text)
            self.dirty = False
            self._update_title()
            self.notify(f"reloaded {self.source.path} from disk", timeout=3)
        else:
            self.notify("not saved: the file on disk was left as the other program wrote it", timeout=6)

    async def action_quit(self) -> None:
        if not self.dirty:
            self.exit()
            return

        def chosen(choice: str | None) -> None:
            if choice == "discard" or (choice == "save" and self.action_save()):
                self.exit()

        if not isinstance(self.screen, ConfirmQuitScreen):
            self.push_screen(ConfirmQuitScreen(self.source.name), chosen)

    def _update_title(self) -> None:
        flags = " [read-only]" if self.source.read_only else (" [modified]" if self.dirty else "")
        self.title = f"greencode · {self.source.name}{flags}"
