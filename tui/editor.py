"""The editor pane: a code TextArea that draws the streamed completion as ghost text at the cursor,
each token in the colour of the layer it exited at.

TextArea already draws a one-line `suggestion` at the cursor (and sizes, scrolls and crops it); we tag
that style with a marker and recolour the tagged characters per token in `render_line`. Tab accepts
(inserts the completion), Esc dismisses; both come up to the app as messages.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Size
from textual.strip import Strip
from textual.document._wrapped_document import WrappedDocument
from textual.widgets import TextArea

from greencode.exits.bands import BANDS, band_class
from tui.ghost import inline_text
from tui.indent import closing_dedent, newline_text
from tui.messages import GhostAccepted, GhostClicked, GhostDismissed, GhostPartRequested

GHOST_META = "greencode-ghost"
LARGE_DOCUMENT_LINES = 20_000  # past this, the editor's size is kept up to date incrementally
SUGGESTION = "text-area--suggestion"


class _FastWrappedDocument(WrappedDocument):
    """Two O(lines) costs of TextArea that make a 100k-line file sluggish, removed:
    - `height` is asked once per drawn line and sums over every line: cache it until the next (re)wrap;
    - a full `wrap` runs on every resize and gutter change even when nothing wraps (width 0): an edit that
      went through `wrap_range` leaves an unwrapped document up to date, so the full pass is skipped then.
    """

    _cached_height: int | None = None
    _wrapped_as: tuple[int, int] | None = None  # (width, tab width) of the last full wrap

    def wrap(self, width: int, tab_width: int | None = None) -> None:
        key = (width, tab_width or self._tab_width)
        # Not when an edit skipped wrap_range (TextArea does, when the gutter widens: 9 -> 10 lines).
        if width == 0 and key == self._wrapped_as and len(self._wrap_offsets) == self.document.line_count:
            return
        self._cached_height = None
        super().wrap(width, tab_width)
        self._wrapped_as = key

    def wrap_range(self, *args, **kwargs) -> None:
        self._cached_height = None
        super().wrap_range(*args, **kwargs)

    @property
    def height(self) -> int:
        if self._cached_height is None:
            self._cached_height = super().height
        return self._cached_height


class CodeEditor(TextArea):
    COMPONENT_CLASSES = TextArea.COMPONENT_CLASSES | {f"band-{band}" for band in range(BANDS)}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hide_suggestion_on_blur = False  # the ghost stays visible while the knob is clicked
        self._ghost: list[tuple[str, int]] = []  # (token text, exit layer)
        self._ghost_layers = 1  # L of the model that produced the ghost
        self._ghost_char_classes: list[str] = []  # one band class per drawn character

    @property
    def wrapped_document(self) -> WrappedDocument:
        return self._wrapped_document

    @wrapped_document.setter
    def wrapped_document(self, value: WrappedDocument) -> None:
        # TextArea builds a plain WrappedDocument (already wrapped by its __init__) for each new document.
        value.__class__ = _FastWrappedDocument
        value._wrapped_as = (value._width, value._tab_width)
        self._wrapped_document = value
        self._document_width = None  # a new document: measure its width again

    # -- ghost state (attributes go down: the app calls these) -----------------------------------

    def show_ghost(self, pieces: list[tuple[str, int]], num_layers: int) -> None:
        self._ghost, self._ghost_layers = list(pieces), num_layers
        classes: list[str] = []
        for text, layer in self._ghost:
            classes.extend([band_class(layer, num_layers)] * len(inline_text(text, self.indent_width)))
        self._ghost_char_classes = classes
        self.suggestion = "".join(inline_text(text, self.indent_width) for text, _ in self._ghost)
        self._refresh_size()
        self.refresh()

    def clear_ghost(self) -> None:
        if self._ghost or self.suggestion:
            self._ghost, self._ghost_char_classes = [], []
            self.suggestion = ""
            self._refresh_size()

    @property
    def ghost_text(self) -> str:
        """What Tab would insert."""
        return "".join(text for text, _ in self._ghost)

    @property
    def ghost_spans(self) -> list[tuple[str, str]]:
        """(token text, band class) per token, as drawn."""
        return [(text, band_class(layer, self._ghost_layers)) for text, layer in self._ghost]

    def accept_ghost(self) -> None:
        text = self.ghost_text
        if not text or self.read_only:
            return
        self.clear_ghost()
        self.insert(text)
        self.post_message(GhostAccepted(text))

    # -- keys ------------------------------------------------------------------------------------

    async def _on_key(self, event: events.Key) -> None:
        # Runs before TextArea._on_key (Textual walks the MRO); prevent_default stops TextArea's handler.
        if event.key == "tab" and self._ghost and not self.read_only:
            event.stop()
            event.prevent_default()
            self.accept_ghost()
        elif event.key == "escape":  # dismiss the ghost and stop an in-flight completion
            event.stop()
            event.prevent_default()
            self.clear_ghost()
            self.post_message(GhostDismissed())
        elif event.key in ("ctrl+right", "ctrl+l") and self._ghost:  # the next word / line of the ghost
            event.stop()
            event.prevent_default()
            self.post_message(GhostPartRequested("word" if event.key == "ctrl+right" else "line"))
        elif event.key == "enter" and not self.read_only and self.selection.is_empty:
            event.stop()
            event.prevent_default()
            row, column = self.cursor_location
            self.insert(newline_text(self.document[row][:column], self.language, self.indent_width))
        elif event.character == "}" and not self.read_only and self.selection.is_empty:
            row, column = self.cursor_location
            remove = closing_dedent(self.document[row][:column], self.indent_width)
            if remove:
                event.stop()
                event.prevent_default()
                self.replace("}", (row, column - remove), (row, column))

    def on_click(self, event: events.Click) -> None:
        """A click on a ghost token opens the inspector on it."""
        if not self._ghost:
            return
        cursor = self.cursor_screen_offset
        if event.screen_y != cursor.y or event.screen_x < cursor.x:
            return
        offset, drawn = event.screen_x - cursor.x, 0
        for index, (text, _) in enumerate(self._ghost):
            drawn += len(inline_text(text, self.indent_width))
            if offset < drawn:
                event.stop()
                self.post_message(GhostClicked(index))
                return

    def action_cursor_right(self, select: bool = False) -> None:
        # TextArea inserts its suggestion on right-arrow; here only Tab accepts.
        if self._ghost:
            self.clear_ghost()
            self.post_message(GhostDismissed())
        super().action_cursor_right(select)

    # -- drawing ---------------------------------------------------------------------------------

    def get_component_rich_style(self, *names: str, partial: bool = False, default: Style | None = None) -> Style:
        style = super().get_component_rich_style(*names, partial=partial, default=default)
        if names == (SUGGESTION,):
            style += Style(meta={GHOST_META: True})  # lets render_line find the ghost characters
        return style

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        if not self._ghost_char_classes:
            return strip
        segments = list(strip)
        if not any(seg.style is not None and seg.style.meta.get(GHOST_META) for seg in segments):
            return strip
        index = 0  # into the ghost's characters, counted from the cursor
        recoloured: list[Segment] = []
        for segment in segments:
            style = segment.style
            if style is None or not style.meta.get(GHOST_META) or segment.control:
                recoloured.append(segment)
                continue
            for char in segment.text:
                band = self._ghost_char_classes[min(index, len(self._ghost_char_classes) - 1)]
                colour = self.get_component_rich_style(band).color
                recoloured.append(Segment(char, style + Style(color=colour)))
                index += 1
        return Strip(recoloured, strip.cell_length).simplify()

    def edit(self, edit):
        self._edit_top_row = edit.top[0]  # _refresh_size (called inside) widens with the edited rows only
        return super().edit(edit)

    def _refresh_size(self) -> None:
        if self.soft_wrap or self.document.line_count < LARGE_DOCUMENT_LINES:
            super()._refresh_size()
        else:  # Document.get_size measures every line: on a huge file, measure once, then the edited rows
            row = self.cursor_location[0]
            if getattr(self, "_document_width", None) is None:
                self._document_width = self.document.get_size(self.indent_width).width
            top = min(row, getattr(self, "_edit_top_row", row), self.document.line_count - 1)
            for index in range(max(0, top), min(row + 1, self.document.line_count)):
                self._document_width = max(self._document_width, self.get_column_width(index, len(self.document[index])))
            self.virtual_size = Size(self._document_width + self.gutter_width + 1, self.document.line_count)
            self._refresh_scrollbars()
        if self.suggestion and not self.soft_wrap:  # make room for a ghost past the longest line
            row, _ = self.cursor_location
            line_width = self.get_column_width(row, len(self.document[row]))
            needed = line_width + cell_len(self.suggestion) + self.gutter_width + 1
            # ...but only up to the visible width: a ghost never adds a horizontal scrollbar (the preview
            # under the editor shows it whole).
            needed = min(needed, max(self.virtual_size.width, self.scrollable_content_region.width))
            if needed > self.virtual_size.width:
                self.virtual_size = Size(needed, self.virtual_size.height)
