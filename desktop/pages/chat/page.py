"""The Chat page: pick a model and a prompt format, talk, stop, regenerate, edit and resend,
inspect the exact prompt, watch the context fill, browse and export past conversations.

Model loads, prompt building, generation, guard checks and retrieval all run as jobs of the
context's runner (their bodies in jobs.py beside this module); streamed text arrives in batches
of ~30 ms and is appended, never re-rendered, while it streams. Stop cancels the turn's job: the
answer keeps the text that came, stored and shown as stopped, and no error is shown. The safety
guard is built from the settings (again when they change) and given to every turn; each message
then shows its verdict badge, and answers their code-scan findings. The page's pieces live
beside it in this package.
"""

from __future__ import annotations

from collections.abc import Iterator

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QLabel, QMessageBox, QSplitter, QVBoxLayout, QWidget

from core.chat.backends import BackendInfo, ChatBackend
from core.chat.params import GenerationParams
from core.chat.session import ChatEvent, ChatSession
from core.chat.store import HistoryStore
from core.errors import ContextOverflow, CorralError
from core.prompts.base import TagPolicy
from core.safety.guard import GuardService
from desktop.context import AppContext
from desktop.jobs import Worker
from desktop.pages.chat.controls import ChatSetup, Composer, known_models
from desktop.pages.chat.guard import ChatGuard
from desktop.pages.chat.history import ConversationList
from desktop.pages.chat.jobs import TurnAction, TurnUpdate, open_model_job, turn_job
from desktop.pages.chat.panels import ContextMeter, Draft, PromptInspector, PromptWatch
from desktop.pages.chat.sources import (
    KbChooser,
    Preview,
    SourcesPanel,
    answer_summary,
    preview,
    preview_summary,
)
from desktop.pages.chat.transcript import TranscriptView, verdict_sentence

CHECKING = {"input": "Checking your message with the safety guard …",
            "output": "Checking the answer with the safety guard …",
            "documents": "Checking the retrieved passages with the safety guard …"}
NO_KB_CHOSEN = ("Choose a knowledge base for “Use documents” (create one on the Documents "
                "page), or turn the switch off.")


class ChatPage(QWidget):
    #: a turn ended (answered, blocked, stopped or failed) and the transcript shows it
    turn_done = Signal()
    #: a "Retrieval only" search ended and the Sources panel shows what it found (or why not)
    retrieval_done = Signal()

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.store = HistoryStore()
        self.backend: ChatBackend | None = None
        self.backend_ref = ""
        self.backend_info: BackendInfo | None = None
        self.conversation_id: int | None = None
        self.editing_id: int | None = None
        self.turn: Worker[int | None] | None = None  #: the running turn (Stop cancels it)
        self.chat_guard = ChatGuard()
        self._turn_guard: GuardService | None = None
        self._pending_clear = False
        self._build()
        self._update_guard()
        self._refresh_list()
        self._show_conversation()
        self.ctx.bus.open_chat.connect(self.open_model)
        self.ctx.bus.settings_changed.connect(self._settings_changed)
        if ctx.settings.chat.default_model:
            self.model_box.setEditText(ctx.settings.chat.default_model)
            self.open_model(ctx.settings.chat.default_model)

    # --- layout ------------------------------------------------------------------------

    def _build(self) -> None:
        chat = self.ctx.settings.chat
        self.conversations = ConversationList(self.store)
        self.kbs = KbChooser(self.ctx, self)
        self.use_docs, self.kb_box = self.kbs.use_docs, self.kbs.kb_box
        self.setup = ChatSetup(chat, known_models(chat.default_model), self.use_docs, self.kb_box)
        self.model_box, self.format_box = self.setup.model_box, self.setup.format_box
        self.format_note, self.guard_note = self.setup.format_note, self.setup.guard_note
        self.params_button, self.params_form = self.setup.params_button, self.setup.params_form
        self.inspect_button, self.system_edit = self.setup.inspect_button, self.setup.system_edit
        self.meter = ContextMeter()
        self.transcript = TranscriptView()
        self.transcript.action.connect(self._on_action)
        self.transcript.scan_code = bool(self.ctx.settings.safety.scan_code)
        self.guard_status = QLabel("")
        self.guard_status.setObjectName("emptyState")
        self.guard_status.setVisible(False)
        self.composer = Composer()
        self.input, self.send_button = self.composer.input, self.composer.send_button
        self.stop_button = self.composer.stop_button
        self.retrieval_button = self.composer.retrieval_button
        self.edit_note = self.composer.edit_note
        self.use_docs.toggled.connect(self.retrieval_button.setEnabled)
        self.error = QLabel("")
        self.error.setObjectName("errorText")
        self.error.setWordWrap(True)
        center = QWidget()
        col = QVBoxLayout(center)
        for w in (self.setup, self.meter, self.transcript, self.guard_status, self.error,
                  self.composer):
            col.addWidget(w)
        col.setStretchFactor(self.transcript, 1)
        self.inspector = PromptInspector()
        self.inspector.setVisible(False)
        self.inspector.send_to_tokens.connect(
            lambda text: self.ctx.bus.send_to_tokens.emit(text, self.backend_ref))
        self.prompt_watch = PromptWatch(self.ctx, self.meter, self.inspector, self._draft, self)
        self.inspect_button.toggled.connect(self.prompt_watch.show_inspector)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.conversations)
        split.addWidget(center)
        split.addWidget(self.inspector)
        self.sources = SourcesPanel()
        self.sources.setVisible(False)
        split.addWidget(self.sources)
        split.setSizes([200, 700, 320, 320])
        split.setStretchFactor(1, 1)
        outer = QVBoxLayout(self)
        outer.addWidget(split)
        # wiring
        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.retrieval_button.clicked.connect(self.retrieval_only)
        QShortcut(QKeySequence("Ctrl+Return"), self.input).activated.connect(self.send)
        QShortcut(QKeySequence("Escape"), self.input).activated.connect(self._cancel_edit)
        line = self.model_box.lineEdit()
        assert line is not None  # the model box is editable
        line.editingFinished.connect(lambda: self.open_model(self.model_box.currentText()))
        self.model_box.activated.connect(lambda _i: self.open_model(self.model_box.currentText()))
        self.format_box.currentIndexChanged.connect(lambda _i: self.prompt_watch.refresh())
        self.conversations.chosen.connect(self.load_conversation)
        self.conversations.new_requested.connect(self.new_conversation)
        self.conversations.refresh_requested.connect(self._refresh_list)
        self.conversations.deleted.connect(self._deleted)
        self.conversations.exported.connect(lambda path: self.ctx.status(f"Exported to {path}."))
        self.input.textChanged.connect(self.prompt_watch.refresh_soon)
        self.system_edit.textChanged.connect(self.prompt_watch.refresh_soon)

    # --- model -------------------------------------------------------------------------

    def open_model(self, ref: str) -> None:
        ref = ref.strip()
        if not ref or (ref == self.backend_ref and self.backend is not None):
            return
        if self.model_box.currentText() != ref:
            self.model_box.setEditText(ref)
        self.backend, self.backend_ref, self.backend_info = None, ref, None
        self.format_note.setText(f"Opening {ref} …")
        self.error.clear()
        # a newer open supersedes this one: only the model asked for last is ever shown
        self.ctx.jobs.run(open_model_job, ref, self.ctx.settings, group="chat-model",
                          on_result=self._model_opened, on_error=self._model_failed)

    def _model_opened(self, result: tuple[ChatBackend, BackendInfo]) -> None:
        self.backend, info = result
        self.backend_info = info
        self.format_note.setText(f"{info.name}: Auto picks {info.format} because "
                                 f"{info.format_reason}.")
        self.prompt_watch.refresh()

    def _model_failed(self, exc: BaseException) -> None:
        self.format_note.setText("")
        self.error.setText(self.ctx.show_error(exc))

    def chosen_format(self) -> str:
        key = str(self.format_box.currentData())
        if key == "auto" and self.backend_info is not None:
            return str(self.backend_info.format)
        return key

    def _session(self, backend: ChatBackend) -> ChatSession:
        """A session on ``backend`` as the widgets say (format, system prompt, parameters)."""
        conv = self.store.conversation(self.conversation_id) if self.conversation_id else None
        # as core reads the setting: control tags are refused, or else defused
        tags: TagPolicy = "refuse" if self.ctx.settings.chat.special_tags == "refuse" else "defuse"
        return ChatSession(
            backend, store=self.store, conversation=conv, model_ref=self.backend_ref,
            fmt=self.chosen_format(), system=self.system_edit.toPlainText(),
            params=self.params_form.params(), tags=tags,
            kb=self.kbs.chosen(), check_documents=bool(self.ctx.settings.safety.check_documents))

    # --- safety ----------------------------------------------------------------------

    def _settings_changed(self) -> None:
        self._update_guard()
        scan = bool(self.ctx.settings.safety.scan_code)
        if scan != self.transcript.scan_code:
            self.transcript.scan_code = scan
            if self.turn is None:  # a running turn re-renders when it ends
                self._show_conversation()

    @property
    def guard(self) -> GuardService | None:
        """The GuardService every turn gets, or None when checks are off."""
        return self.chat_guard.service

    def _update_guard(self) -> None:
        try:
            self.chat_guard.update(self.ctx.settings)
        except CorralError as exc:  # e.g. an unknown guard version: say so; chat unguarded
            self.error.setText("Safety checks are off: " + self.ctx.show_error(exc))
        text, tip = self.chat_guard.note()
        self.guard_note.setText(text)
        self.guard_note.setToolTip(tip)

    def _set_guard_status(self, text: str) -> None:
        self.guard_status.setText(text)
        self.guard_status.setVisible(bool(text))

    def send(self, *, drop_oldest: bool | None = None) -> None:
        text = self.input.toPlainText()
        if self.turn is not None:
            return
        if not text.strip():
            self.error.setText("The message is empty: type something to send.")
            return
        if self.backend is None:
            self.error.setText("Pick a model first (and wait until it is open)."
                               if not self.backend_ref else f"{self.backend_ref} is still opening.")
            return
        editing = self.editing_id

        def action(s: ChatSession, d: bool) -> Iterator[ChatEvent]:
            if editing is not None:
                return s.edit_and_resend(editing, text, drop_oldest=d)
            return s.send(text, drop_oldest=d)

        self._start_turn(action, drop_oldest, clear_input=True)

    def regenerate(self) -> None:
        if self.backend is None or self.turn is not None:
            return
        self._start_turn(lambda s, d: s.regenerate(drop_oldest=d), None)

    def _start_turn(self, action: TurnAction, drop_oldest: bool | None, *,
                    clear_input: bool = False) -> None:
        self.error.clear()
        if self.backend is None:  # e.g. another model was asked for meanwhile
            return
        if self.use_docs.isChecked() and not self.kbs.chosen():
            self.error.setText(NO_KB_CHOSEN)
            return
        drop = self.ctx.settings.chat.drop_oldest if drop_oldest is None else drop_oldest
        session = self._session(self.backend)  # built here: it reads the widgets
        guard = self.guard
        self._turn_guard = guard
        self._pending_clear = clear_input
        self.meter.set_answer(0)  # the new answer has no tokens yet
        self.send_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.ctx.jobs.drop("chat-inspect")  # a count of the draft is stale once it is sent
        self.turn = self.ctx.jobs.run(
            turn_job, session, action, drop, guard, self.ctx.settings, group="chat-turn",
            interrupt=session.cancel, on_partial=self._on_partial,
            on_result=self._turn_finished, on_cancelled=self._turn_stopped,
            on_error=lambda exc: self._turn_failed(exc, action, clear_input),
            on_done=self._turn_done)

    def stop(self) -> None:
        """Stop the answer: it keeps the text that came (``_turn_stopped``), no error."""
        if self.turn is not None:
            self.turn.cancel()

    def _on_partial(self, item: TurnUpdate) -> None:
        kind, payload, tokens = item
        if isinstance(payload, str):
            if kind == "delta":
                self.transcript.append_stream(payload)
                self.meter.set_answer(tokens)
            elif kind == "checking":
                self._set_guard_status(CHECKING.get(payload, CHECKING["output"]))
            elif kind == "status":
                self._set_guard_status(payload)
            return
        ev = payload
        if ev.kind == "started":
            self._set_guard_status("")
            if self._pending_clear:
                self.input.clear()
                self._cancel_edit()
            cid = ev.user_message.conversation_id if ev.user_message else self.conversation_id
            if cid != self.conversation_id:
                self.conversation_id = cid
            self._show_conversation(upto_position=ev.user_message.position
                                    if ev.user_message else None)
            if self._turn_guard is None:  # else the answer starts after the input check
                self.transcript.begin_stream(None)
            if ev.dropped_turns:
                self.ctx.status(f"Dropped the {ev.dropped_turns} oldest turn(s) to fit.")
        elif ev.kind == "verdict":
            self._set_guard_status("")
            if ev.direction == "input" and ev.message is not None:
                # the message with its badge; the answer streams below it unless blocked
                self._show_conversation(upto_position=ev.message.position)
                if (ev.verdict or {}).get("action") != "block":
                    self.transcript.begin_stream(None)
            else:
                self._show_conversation()
        elif ev.kind == "blocked":
            self.error.setText("Your message was not sent to the model. "
                               + verdict_sentence(ev.verdict))

    def _turn_finished(self, cid: int | None) -> None:
        if cid is not None:
            self.conversation_id = cid
        self._show_conversation()
        self._refresh_list()

    def _turn_stopped(self, cid: object) -> None:
        """Stop (or the window closing) ended the turn. The session stored the answer so far,
        marked stopped (or interrupted, when the stream broke off): show the conversation as
        stored, and no error. ``cid`` is the conversation id when the turn ran to its end."""
        self._turn_finished(cid if isinstance(cid, int) else None)

    def _turn_failed(self, exc: BaseException, action: TurnAction, clear_input: bool) -> None:
        if isinstance(exc, ContextOverflow):
            answer = QMessageBox.question(
                self, "The conversation does not fit",
                f"{exc.sentence()}\n\nDrop the oldest turns from the prompt and send anyway?")
            if answer == QMessageBox.StandardButton.Yes:
                QTimer.singleShot(0, lambda: self._start_turn(action, True,
                                                              clear_input=clear_input))
                return
        self.error.setText(self.ctx.show_error(exc))
        self._show_conversation()
        self._refresh_list()

    def _turn_done(self) -> None:
        self.turn = None
        self._turn_guard = None
        self._set_guard_status("")
        self.send_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.prompt_watch.refresh()  # the meter counts the history the turn left
        self.turn_done.emit()

    # --- conversations ------------------------------------------------------------------

    def _refresh_list(self) -> None:
        self.conversations.refresh(self.conversation_id)

    def _show_conversation(self, upto_position: int | None = None) -> None:
        msgs = self.store.messages(self.conversation_id) if self.conversation_id else []
        if upto_position is not None:
            msgs = [m for m in msgs if m.position <= upto_position]
        empty = ("Pick a model above, then type a message below." if self.backend_ref == ""
                 else "Type a message below to start.")
        self.transcript.show_messages(msgs, empty_text=empty)

    def load_conversation(self, cid: int) -> None:
        if self.turn is not None:
            return
        conv = self.store.conversation(cid)
        self.conversation_id = cid
        self.system_edit.setPlainText(conv.system)
        self.params_form.set_params(GenerationParams.from_dict(conv.params))
        idx = self.format_box.findData(conv.format or "auto")
        self.format_box.setCurrentIndex(max(idx, 0))
        self.kbs.choose(conv.kb)
        self._cancel_edit()
        self._show_conversation()
        if conv.model:
            self.open_model(conv.model)
        self.prompt_watch.refresh()

    def new_conversation(self) -> None:
        if self.turn is not None:
            return
        self.conversation_id = None
        self._cancel_edit()
        self._refresh_list()
        self._show_conversation()
        self.prompt_watch.refresh()

    def _deleted(self, cid: int) -> None:
        if cid == self.conversation_id:
            self.conversation_id = None
            self._show_conversation()
        self._refresh_list()

    # --- actions in the transcript ----------------------------------------------------

    def _on_action(self, name: str, mid: int, index: int) -> None:
        if name in ("regenerate", "retry"):
            self.regenerate()
        elif name == "edit":
            self.editing_id = mid
            self.composer.start_edit(self.store.message(mid).content)
        elif name in ("reveal", "hide"):
            if name == "reveal":
                self.transcript.revealed.add(mid)
            else:
                self.transcript.revealed.discard(mid)
            if self.turn is None:
                self._show_conversation()
        elif name == "copy" and index < 0:
            from PySide6.QtGui import QGuiApplication

            QGuiApplication.clipboard().setText(self.store.message(mid).content)
        elif name == "cite":
            self.open_reference(mid, index)

    def _cancel_edit(self) -> None:
        self.editing_id = None
        self.composer.end_edit()

    # --- documents ----------------------------------------------------------------------

    def open_reference(self, message_id: int, number: int) -> None:
        """Show the exact chunk behind reference [number] of an answer in the Sources panel."""
        msg = self.store.message(message_id)
        kb = self.store.conversation(msg.conversation_id).kb
        self.sources.show_citations(msg.citations or [], answer_summary(msg.citations, kb),
                                    select=number)

    def retrieval_only(self) -> None:
        """What the knowledge base gives the typed message, with scores; nothing generated."""
        text = self.input.toPlainText().strip()
        kb = self.kbs.chosen()
        if not text:
            self.error.setText("Type a message first: Retrieval only shows the passages it "
                               "would bring into the prompt.")
            return
        if not kb:
            self.error.setText(NO_KB_CHOSEN)
            return
        self.error.clear()
        settings = self.ctx.settings
        self.retrieval_button.setEnabled(False)
        self._set_guard_status(f"Searching the knowledge base '{kb}' …")
        self.ctx.jobs.run(preview, kb, text, settings, self.guard,
                          bool(settings.safety.check_documents), str(self.conversation_id or ""),
                          group="chat-retrieval", on_partial=self._on_partial,
                          on_result=self._retrieval_found, on_error=self._retrieval_failed,
                          on_done=self._retrieval_ended)

    def _retrieval_found(self, found: Preview) -> None:
        self.sources.show_citations(found.citations, preview_summary(*found))

    def _retrieval_failed(self, exc: BaseException) -> None:
        self.error.setText(self.ctx.show_error(exc))

    def _retrieval_ended(self) -> None:
        if self.turn is None:  # else the turn's own status line stays
            self._set_guard_status("")
        self.retrieval_button.setEnabled(self.use_docs.isChecked())
        self.retrieval_done.emit()

    # --- inspector and meter ------------------------------------------------------------

    def _draft(self) -> Draft | None:
        """What the meter and the inspector count; nothing without a model or during a turn."""
        if self.backend is None or self.turn is not None:
            return None
        session = self._session(self.backend)
        kind = self.backend_info.kind if self.backend_info else ""
        editing = self.store.message(self.editing_id) if self.editing_id is not None else None
        upto = editing.position if editing is not None else None
        return Draft(session, self.input.toPlainText(), upto, kind)
