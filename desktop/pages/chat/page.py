"""The Chat page: pick a model and a prompt format, talk, stop, regenerate, edit and resend,
inspect the exact prompt, watch the context fill, browse and export past conversations.

Model loads, prompt building, generation, guard checks and retrieval all run as jobs of the
context's runner (their bodies in jobs.py beside this module); a turn's events are shown by
turns.py, where the streamed text arrives in batches of ~30 ms and is appended, never
re-rendered. The safety guard is built from the settings in a worker (again when they change)
and given to every turn; each message then shows its verdict badge, and answers their
code-scan findings (a job per answer, scans.py). The toolbar says whether the guard works;
when it cannot check a message, the message is blocked (or warned, as the settings say) and
"Send without the guard" offers to send that one message unchecked; Stop also stops a check
that runs. The page's pieces live beside it in this package.
"""

from __future__ import annotations

import copy

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSplitter, QVBoxLayout, QWidget

from core.chat.backends import BackendInfo, ChatBackend
from core.chat.params import GenerationParams
from core.chat.session import ChatSession
from core.chat.store import HistoryStore
from core.prompts.base import TagPolicy
from core.safety.guard import GuardBase
from core.safety.verdict import holds_answers
from desktop.context import AppContext
from desktop.pages.chat.controls import ChatSetup, Composer, known_models
from desktop.pages.chat.guard import ChatGuard
from desktop.pages.chat.history import ConversationList
from desktop.pages.chat.jobs import build_guard_job, open_model_job
from desktop.pages.chat.panels import ContextMeter, Draft, PromptInspector, PromptWatch
from desktop.pages.chat.scans import AnswerScans
from desktop.pages.chat.sources import (
    NO_KB_CHOSEN,
    KbChooser,
    Preview,
    SourcesPanel,
    answer_summary,
    preview,
    preview_summary,
)
from desktop.pages.chat.transcript import TranscriptView
from desktop.pages.chat.turns import CHECKING, ChatTurns


class ChatPage(QWidget):
    #: a turn ended (answered, blocked, stopped or failed) and the transcript shows it
    turn_done = Signal()
    #: a "Retrieval only" search ended and the Sources panel shows what it found (or why not)
    retrieval_done = Signal()

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.store = HistoryStore()
        # the page's own connection to the history goes with the page (its jobs ended first:
        # the window waits for them as it closes)
        self.destroyed.connect(self.store.close)
        self.backend: ChatBackend | None = None
        self.backend_ref = ""
        self.backend_info: BackendInfo | None = None
        self.conversation_id: int | None = None
        self.editing_id: int | None = None
        self.chat_guard = ChatGuard()
        self.guard_built = False  #: the toolbar shows what the last build of the guard found
        self.turns = ChatTurns(self)
        self._build()
        self._update_guard()
        self.refresh_list()
        self.show_conversation()
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
        self.scans = AnswerScans(self.ctx.jobs, self)  # one job per answer with code
        self.transcript.scans = self.scans
        self.scans.scanned.connect(self._code_scanned)
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
        self.unguarded_button = QPushButton("Send without the guard")
        self.unguarded_button.setToolTip(
            "Send this one message to the model unchecked. The conversation and the audit log "
            "record that you chose to.")
        self.unguarded_button.setVisible(False)
        self.unguarded_reason = ""
        problem = QHBoxLayout()
        problem.addWidget(self.error, 1)
        problem.addWidget(self.unguarded_button, 0, Qt.AlignmentFlag.AlignTop)
        center = QWidget()
        col = QVBoxLayout(center)
        for w in (self.setup, self.meter, self.transcript, self.guard_status):
            col.addWidget(w)
        col.addLayout(problem)
        col.addWidget(self.composer)
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
        self.send_button.clicked.connect(self.turns.send)
        self.stop_button.clicked.connect(self.turns.stop)
        self.unguarded_button.clicked.connect(
            lambda: self.turns.send_unguarded(self.unguarded_reason))
        self.retrieval_button.clicked.connect(self.retrieval_only)
        QShortcut(QKeySequence("Ctrl+Return"), self.input).activated.connect(self.turns.send)
        QShortcut(QKeySequence("Escape"), self.input).activated.connect(self.cancel_edit)
        line = self.model_box.lineEdit()
        assert line is not None  # the model box is editable
        line.editingFinished.connect(lambda: self.open_model(self.model_box.currentText()))
        self.model_box.activated.connect(lambda _i: self.open_model(self.model_box.currentText()))
        self.format_box.currentIndexChanged.connect(lambda _i: self.prompt_watch.refresh())
        # the meter shows the length the model really gets for the one picked
        self.params_form.context_length.valueChanged.connect(self.prompt_watch.refresh_soon)
        self.conversations.chosen.connect(self.load_conversation)
        self.conversations.new_requested.connect(self.new_conversation)
        self.conversations.refresh_requested.connect(self.refresh_list)
        self.conversations.deleted.connect(self._deleted)
        self.conversations.exported.connect(lambda path: self.ctx.status(f"Exported to {path}."))
        self.input.textChanged.connect(self.prompt_watch.refresh_soon)
        self.system_edit.textChanged.connect(self.prompt_watch.refresh_soon)

    # --- model -------------------------------------------------------------------------

    def open_model(self, ref: str) -> None:
        """Open ``ref`` for chat (the model box, a stored conversation's model, and "Chat with
        it" on another page: the window builds this page first, then calls this)."""
        ref = ref.strip()
        if not ref or (ref == self.backend_ref and self.backend is not None):
            return
        if self.model_box.currentText() != ref:
            self.model_box.setEditText(ref)
        self.backend, self.backend_ref, self.backend_info = None, ref, None
        self.meter.set_model(None)
        self.format_note.setText(f"Opening {ref} …")
        self.error.clear()
        # a newer open supersedes this one: only the model asked for last is ever shown
        self.ctx.jobs.run(open_model_job, ref, self.ctx.settings, group="chat-model",
                          on_result=self._model_opened, on_error=self._model_failed)

    def _model_opened(self, result: tuple[ChatBackend, BackendInfo]) -> None:
        self.backend, info = result
        self.backend_info = info
        self.meter.set_model(info)
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

    def session(self, backend: ChatBackend) -> ChatSession:
        """A session on ``backend`` as the widgets say (format, system prompt, parameters)."""
        conv = self.store.conversation(self.conversation_id) if self.conversation_id else None
        # as core reads the setting: control tags are refused, or else defused
        tags: TagPolicy = "refuse" if self.ctx.settings.chat.special_tags == "refuse" else "defuse"
        return ChatSession(
            backend, store=self.store, conversation=conv, model_ref=self.backend_ref,
            fmt=self.chosen_format(), system=self.system_edit.toPlainText(),
            params=self.params_form.params(), tags=tags,
            kb=self.kbs.chosen(), check_documents=bool(self.ctx.settings.safety.check_documents),
            hold=holds_answers(self.ctx.settings.safety))

    # --- safety ----------------------------------------------------------------------

    def _settings_changed(self) -> None:
        self._update_guard()
        scan = bool(self.ctx.settings.safety.scan_code)
        if scan != self.transcript.scan_code:
            self.transcript.scan_code = scan
            if not scan:
                self.scans.drop_all()
            if not self.turns.running:  # a running turn re-renders when it ends
                self.show_conversation()

    def _code_scanned(self, message_id: int) -> None:
        """An answer's code scan has come: show it where the reader is (a running turn shows
        it when it ends; an answer no longer shown, when it is shown again)."""
        if not self.turns.running and message_id in self.transcript.shown_ids:
            self.show_conversation(keep_place=True)

    @property
    def guard(self) -> GuardBase | None:
        """The guard the last build gave (None when checks are off); turns build their own
        when the settings changed meanwhile."""
        return self.chat_guard.guard

    def _update_guard(self) -> None:
        """Say at once what the settings ask for, then build the guard in a worker (it reads
        the audit log and the model file) and say what it found (``guard_built``)."""
        self.guard_built = False
        self.show_guard_note()
        self.ctx.jobs.run(build_guard_job, self.chat_guard, copy.deepcopy(self.ctx.settings),
                          group="chat-guard", quiet=True, on_result=self._guard_built)

    def _guard_built(self, _guard: object) -> None:
        self.guard_built = True
        self.show_guard_note()

    def show_guard_note(self) -> None:
        """The toolbar's word on the guard: off, which guard checks what, or unavailable."""
        text, tip, trouble = self.chat_guard.note(self.ctx.settings)
        self.guard_note.setText(text)
        self.guard_note.setToolTip(tip)
        name = "errorText" if trouble else "emptyState"
        if self.guard_note.objectName() != name:
            self.guard_note.setObjectName(name)
            style = self.guard_note.style()
            style.unpolish(self.guard_note)
            style.polish(self.guard_note)

    def offer_unguarded(self, reason: str) -> None:
        """Offer "Send without the guard" for the blocked message (``reason``: why the guard
        could not check it); "" takes the offer back."""
        self.unguarded_reason = reason
        self.unguarded_button.setVisible(bool(reason))

    def set_guard_status(self, text: str) -> None:
        self.guard_status.setText(text)
        self.guard_status.setVisible(bool(text))

    # --- conversations ------------------------------------------------------------------

    def refresh_list(self) -> None:
        self.conversations.refresh(self.conversation_id)

    def show_conversation(self, upto_position: int | None = None, *,
                          keep_place: bool = False) -> None:
        msgs = self.store.messages(self.conversation_id) if self.conversation_id else []
        if upto_position is not None:
            msgs = [m for m in msgs if m.position <= upto_position]
        empty = ("Pick a model above, then type a message below." if self.backend_ref == ""
                 else "Type a message below to start.")
        self.transcript.show_messages(msgs, empty_text=empty, keep_place=keep_place)

    def load_conversation(self, cid: int) -> None:
        if self.turns.running:
            return
        conv = self.store.conversation(cid)
        self.conversation_id = cid
        self.offer_unguarded("")
        self.system_edit.setPlainText(conv.system)
        self.params_form.set_params(GenerationParams.from_dict(conv.params))
        idx = self.format_box.findData(conv.format or "auto")
        self.format_box.setCurrentIndex(max(idx, 0))
        self.kbs.choose(conv.kb)
        self.cancel_edit()
        self.show_conversation()
        if conv.model:
            self.open_model(conv.model)
        self.prompt_watch.refresh()

    def new_conversation(self) -> None:
        if self.turns.running:
            return
        self.conversation_id = None
        self.offer_unguarded("")
        self.cancel_edit()
        self.refresh_list()
        self.show_conversation()
        self.prompt_watch.refresh()

    def _deleted(self, cid: int) -> None:
        if cid == self.conversation_id:
            self.conversation_id = None
            self.show_conversation()
        self.refresh_list()

    # --- actions in the transcript ----------------------------------------------------

    def _on_action(self, name: str, mid: int, index: int) -> None:
        if name in ("regenerate", "retry"):
            self.turns.regenerate()
        elif name == "edit":
            self.editing_id = mid
            self.composer.start_edit(self.store.message(mid).content)
        elif name in ("reveal", "hide"):
            if name == "reveal":
                self.transcript.revealed.add(mid)
            else:
                self.transcript.revealed.discard(mid)
            if not self.turns.running:
                self.show_conversation()
        elif name == "copy" and index < 0:
            from PySide6.QtGui import QGuiApplication

            QGuiApplication.clipboard().setText(self.store.message(mid).content)
        elif name == "cite":
            self.open_reference(mid, index)

    def cancel_edit(self) -> None:
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
        self.set_guard_status(f"Searching the knowledge base '{kb}' …")
        self.ctx.jobs.run(preview, kb, text, copy.deepcopy(settings), self.chat_guard,
                          bool(settings.safety.check_documents), str(self.conversation_id or ""),
                          group="chat-retrieval",
                          on_partial=lambda _item: self.set_guard_status(CHECKING["documents"]),
                          on_result=self._retrieval_found, on_error=self._retrieval_failed,
                          on_done=self._retrieval_ended)

    def _retrieval_found(self, found: Preview) -> None:
        self.sources.show_citations(found.citations, preview_summary(*found))

    def _retrieval_failed(self, exc: BaseException) -> None:
        self.error.setText(self.ctx.show_error(exc))

    def _retrieval_ended(self) -> None:
        if not self.turns.running:  # else the turn's own status line stays
            self.set_guard_status("")
        self.retrieval_button.setEnabled(self.use_docs.isChecked())
        self.retrieval_done.emit()

    # --- inspector and meter ------------------------------------------------------------

    def _draft(self) -> Draft | None:
        """What the meter and the inspector count; nothing without a model or during a turn."""
        if self.backend is None or self.turns.running:
            return None
        session = self.session(self.backend)
        kind = self.backend_info.kind if self.backend_info else ""
        editing = self.store.message(self.editing_id) if self.editing_id is not None else None
        upto = editing.position if editing is not None else None
        return Draft(session, self.input.toPlainText(), upto, kind)
