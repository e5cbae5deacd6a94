"""The playground: an editor whose completions stream in token by token, coloured by exit layer, with
live joules and a threshold knob. The engine runs in thread workers; tokens come back as messages."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Static, TextArea
from textual.worker import get_current_worker

from greencode.errors import GreencodeError
from greencode.decoding.events import CompletionSummary, TokenEvent
from greencode.decoding.fim import SuffixStop
from greencode.decoding.window import text_window
from tui.editor import CodeEditor
from tui.engines import EngineFactory, describe_engine
from tui.ghost import drop_chars, ghost_pieces
from tui.compare import CompareActions
from tui.files import FileActions
from tui.knob import KnobActions
from tui.lens import LensActions
from tui.messages import (CompletionFailed, CompletionFinished, GhostAccepted, GhostDismissed, ModelLoaded,
                          ModelLoadFailed, TokenGenerated, while_running)
from tui.panel import CompletionView, SidePanel
from tui.screens import HelpScreen
from tui.settings import TuiSettings
from greencode.files.source import SourceFile
from tui.stats import CompletionStats, SessionStats

SUFFIX_LINES = 40  # lines after the cursor a block's stop rule reads (it needs only the first non-blank one)


@dataclass
class LiveCompletion:
    """The completion being shown: where it was asked for and what has arrived."""

    run_id: int
    anchor: tuple[int, int]  # cursor location it completes; moving away dismisses it
    stop_at_eol: bool
    stats: CompletionStats
    prompt: str = ""  # what was completed, and how: the inspector replays it
    options: dict = field(default_factory=dict)
    events: list[TokenEvent] = field(default_factory=list)
    summary: CompletionSummary | None = None
    accepted: int = 0  # characters of it already inserted by a word/line accept

    def pieces(self) -> list[tuple[str, int]]:
        """What Tab would insert so far, as (text, exit layer) pieces: cut at the end of the line in line mode,
        before the code after the cursor in block mode, at the final text once it is done."""
        final = self.summary.text if self.summary is not None else None
        return ghost_pieces(self.events, final, self.stop_at_eol, self.options.get("stop_rule"))


class GreencodeApp(KnobActions, CompareActions, FileActions, LensActions, App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "greencode"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("f1", "help", "Help", id="help"),
        Binding("f5,ctrl+space,ctrl+@", "complete", "Complete", id="complete"),
        Binding("f2", "toggle_mode", "Line/Block", id="toggle_mode"),
        Binding("f3", "cycle_policy", "Policy", id="cycle_policy"),
        Binding("f8,ctrl+down", "threshold(-1)", "T-", id="threshold_down"),
        Binding("f9,ctrl+up", "threshold(1)", "T+", id="threshold_up"),
        Binding("f4", "compare", "Compare", id="compare"),
        Binding("f6", "inspect", "Inspect", id="inspect", priority=True),  # priority: TextArea binds F6/F7 too
        Binding("f7", "sweep", "Sweep", id="sweep", priority=True),
        Binding("ctrl+g", "goto_line", "Go to line", id="goto_line", show=False),
        Binding("ctrl+s", "save", "Save", id="save"),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def __init__(self, source: SourceFile, settings: TuiSettings, engine_factory: EngineFactory) -> None:
        super().__init__()
        self.source, self.settings, self._engine_factory = source, settings, engine_factory
        self.engine = None
        self.model_error = ""
        self.policy_kind, self.policy_arg = settings.policy_kind, settings.policy_arg
        self.threshold = settings.threshold
        self.mode = settings.mode
        self.agent_unavailable = ""  # why agent:T cannot run, once we know
        self.dirty = False
        self.session = SessionStats()
        self.live: LiveCompletion | None = None
        self._run_id = 0
        self._stream = None  # the engine Completion being iterated, for cancel()
        self._engine_lock = threading.Lock()  # one stream at a time: a new one waits for the old to stop
        self._idle_timer = None

    # -- layout ----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        source = self.source
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="main"):
                yield Static(Text(self._banner_text()), id="banner", classes="-shown" if self._banner_text() else "")
                yield CodeEditor.code_editor(source.text, language=source.language, read_only=source.read_only,
                                             id="editor", classes="code_editor")
                yield CompletionView(id="preview")
            yield SidePanel(self.settings.model_spec)
        yield Footer()

    @staticmethod
    def _start_location(editor: CodeEditor) -> tuple[int, int]:
        """The end of the last line that holds anything: where a person would continue writing."""
        row = editor.document.line_count - 1
        while row > 0 and not editor.document[row]:
            row -= 1
        return row, len(editor.document[row])

    def _reveal_start(self) -> None:
        """Show the cursor from the left edge: move_cursor scrolled before the layout knew the editor's width,
        which left a file with long lines scrolled right by the cursor's column."""
        self.editor.scroll_to(x=0, animate=False, immediate=True)
        self.editor.scroll_cursor_visible()

    def _banner_text(self) -> str:
        if self.source.read_only:
            return f"read-only: {self.source.read_only_reason}"
        return self.source.note

    def on_mount(self) -> None:
        # Held here: worker messages update them whatever screen is on top (help, compare, quit).
        self.editor = self.query_one(CodeEditor)
        self.preview = self.query_one("#preview", CompletionView)
        self.panel = self.query_one(SidePanel)
        editor = self.editor
        editor.focus()
        editor.move_cursor(self._start_location(editor))
        self.call_after_refresh(self._reveal_start)
        self._update_title()
        self._update_policy()
        self._update_figures()
        self.preview.show(self._idle_hint(), [], 1)
        self.load_engine()

    # -- model loading (a worker: the editor is usable meanwhile) ------------------------------------

    @work(thread=True, exclusive=True, group="load")
    def load_engine(self) -> None:
        try:
            engine = self._engine_factory()
        except GreencodeError as exc:
            self.post_message(ModelLoadFailed(str(exc)))
            return
        except Exception as exc:  # a bug or a broken install: show it, keep the editor alive
            self.log.error(exc)
            self.post_message(ModelLoadFailed(f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(ModelLoaded(engine, describe_engine(engine)))

    @while_running
    def on_model_loaded(self, message: ModelLoaded) -> None:
        self.engine = message.engine
        self.panel.show_model(message.description)
        self._apply_policy(self.policy_kind, announce=False)
        self.panel.show_exits([], self.engine.exit_points, self.engine.num_layers)
        self.preview.show(self._idle_hint(), [], 1)
        self._restart_idle_timer()  # a first completion at the cursor once the model is there

    @while_running
    def on_model_load_failed(self, message: ModelLoadFailed) -> None:
        self.model_error = message.error
        self.panel.show_model(f"model failed to load:\n{message.error}\nediting and saving still work", error=True)
        self.notify(f"model failed to load: {message.error}", severity="error", timeout=10)

    # -- completions -----------------------------------------------------------------------------

    def _prompt(self) -> str:
        editor = self.editor
        row, column = editor.cursor_location
        first_row = max(0, row - 400)  # the engine keeps the tokens nearest the cursor anyway
        text = editor.get_text_range((first_row, 0), (row, column))
        return text_window(text, self.settings.max_context_chars)  # a stable start: the prefix cache can serve it

    def action_complete(self) -> None:
        self.start_completion(explicit=True)

    def start_completion(self, explicit: bool = False) -> None:
        def refuse(why: str) -> None:
            if explicit:
                self.notify(why, severity="warning")

        if self.engine is None:
            return refuse(f"model failed to load: {self.model_error}" if self.model_error else "the model is still loading")
        if self.screen is not self.screen_stack[0]:
            return None
        prompt = self._prompt()
        if not prompt.strip():
            return refuse("nothing before the cursor to complete")
        self.cancel_completion()
        self._run_id += 1
        line_mode = self.mode == "line"
        editor = self.editor
        options = self._options(line_mode, prompt)
        self.live = LiveCompletion(self._run_id, editor.cursor_location, line_mode,
                                   CompletionStats(self.engine.num_layers), prompt, options)
        self.preview.show(f"{self.policy} · waiting for the first token...", [], 1)
        self.run_completion(self._run_id, prompt, options)
        return None

    def _options(self, line_mode: bool, prompt: str) -> dict:
        tokens = self.settings.line_tokens if line_mode else self.settings.block_tokens
        options = {"policy": self.policy, "max_new_tokens": tokens, "stop_at_eol": line_mode,
                   "temperature": self.settings.temperature, "top_p": self.settings.top_p}
        if not line_mode:  # a block stops before it repeats the code after the cursor, as the server's suffix rule
            options["stop_rule"] = SuffixStop(prompt, self._suffix())
        return options

    def _suffix(self) -> str:
        """The code after the cursor (SUFFIX_LINES lines of it: the rule reads only the first lines)."""
        editor = self.editor
        row, column = editor.cursor_location
        last = min(editor.document.line_count - 1, row + SUFFIX_LINES)
        return editor.get_text_range((row, column), (last, len(editor.document.get_line(last))))

    def _stream_tokens(self, prompt: str, options: dict, post_event) -> CompletionSummary:
        """In a worker thread: iterate the engine's stream, post each token, stop early when cancelled."""
        worker = get_current_worker()
        stream = self._stream = self.engine.stream(prompt, **options)
        try:
            for event in stream:
                if worker.is_cancelled:
                    stream.cancel()  # the stream ends before computing another token
                    continue
                post_event(event)
        finally:
            self._stream = None
        return stream.summary

    def _failed(self, run_id: int, exc: Exception) -> None:
        if not isinstance(exc, GreencodeError):  # a bug: show it, keep the user's buffer alive
            self.log.error(exc)
        text = str(exc) if isinstance(exc, GreencodeError) else f"{type(exc).__name__}: {exc}"
        self.post_message(CompletionFailed(run_id, text))

    @work(thread=True, exclusive=True, group="complete")
    def run_completion(self, run_id: int, prompt: str, options: dict) -> None:
        with self._engine_lock:  # a cancelled predecessor finishes its current token first
            if get_current_worker().is_cancelled:
                return
            try:
                summary = self._stream_tokens(prompt, options, lambda e: self.post_message(TokenGenerated(run_id, e)))
            except Exception as exc:
                self._failed(run_id, exc)
                return
            self.post_message(CompletionFinished(run_id, summary))

    def stop_generation(self) -> None:
        """Stop what the engine is generating (a completion or a comparison); what is shown stays."""
        stream = self._stream
        if stream is not None:
            stream.cancel()
        self.workers.cancel_group(self, "complete")

    def cancel_completion(self) -> None:
        """Stop the in-flight completion (if any) and forget the shown one."""
        self.stop_generation()
        self.live = None
        self.editor.clear_ghost()

    def _current(self, run_id: int) -> LiveCompletion | None:
        return self.live if self.live is not None and self.live.run_id == run_id else None

    @while_running
    def on_token_generated(self, message: TokenGenerated) -> None:
        self.session.add(message.event)  # its energy was spent even if the completion was cancelled
        live = self._current(message.run_id)
        if live is None:
            self._update_figures()
            return
        live.events.append(message.event)
        live.stats.add(message.event)
        self._show_live(live, "streaming...")

    @while_running
    def on_completion_finished(self, message: CompletionFinished) -> None:
        live = self._current(message.run_id)
        if live is None:
            return
        live.summary = message.summary
        self.session.completions += 1
        self._show_live(live, f"done ({message.summary.stop_reason}) · Tab accepts, Esc dismisses")

    @while_running
    def on_completion_failed(self, message: CompletionFailed) -> None:
        if message.run_id == self._compare_run_id or self._current(message.run_id) is not None:
            self.notify(f"completion failed: {message.error}", severity="error", timeout=8)
            self.live = None
            self.preview.show(f"completion failed: {message.error}", [], 1)

    def _show_live(self, live: LiveCompletion, status: str) -> None:
        pieces = drop_chars(live.pieces(), live.accepted)
        num_layers = live.stats.num_layers
        editor = self.editor
        if pieces:
            editor.show_ghost(pieces, num_layers)
        else:
            editor.clear_ghost()
        if live.summary is not None and not pieces:
            status = f"no completion ({live.summary.stop_reason})"
        header = f"{live.events[-1].policy if live.events else self.policy} · {len(live.events)} tokens · {status}"
        self.preview.show(header, pieces, num_layers)
        self.panel.show_exits(live.stats.exit_layers, self.engine.exit_points, num_layers)
        self._update_figures()

    # -- editor events: typing cancels, Tab accepts, Esc dismisses -------------------------------

    @on(TextArea.Changed, "#editor")
    def on_editor_changed(self) -> None:
        self.dirty = True
        self._update_title()
        if self.partial_edit_done():  # a word/line accept: the rest of the completion stays
            return
        if self.live is not None:
            self.cancel_completion()
        self._restart_idle_timer()

    @on(TextArea.SelectionChanged, "#editor")
    def on_editor_selection_changed(self, event: TextArea.SelectionChanged) -> None:
        if self.live is not None and event.selection.end != self.live.anchor:
            self.cancel_completion()
            self.preview.show(self._idle_hint(), [], 1)

    def on_ghost_accepted(self, message: GhostAccepted) -> None:
        self.cancel_completion()
        self.preview.show(f"accepted {len(message.text)} characters", [], 1)

    def on_ghost_dismissed(self, message: GhostDismissed) -> None:
        if self._idle_timer is not None:
            self._idle_timer.stop()
        if self.live is not None:
            self.cancel_completion()
            self.preview.show("dismissed", [], 1)

    def _restart_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.stop()
            self._idle_timer = None
        if self.settings.idle_ms > 0:
            self._idle_timer = self.set_timer(self.settings.idle_ms / 1000, self._idle_elapsed)

    def _idle_elapsed(self) -> None:
        self._idle_timer = None
        self.start_completion(explicit=False)

    # -- panel -----------------------------------------------------------------------------------

    def _idle_hint(self) -> str:
        if self.settings.idle_ms > 0:
            return f"completes after a {self.settings.idle_ms} ms pause, or F5"
        return "F5 or ctrl+space to complete"

    def _update_figures(self) -> None:
        self.panel.show_figures(self.live.stats if self.live is not None else None, self.session)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def on_unmount(self) -> None:
        stream = self._stream
        if stream is not None:
            stream.cancel()
