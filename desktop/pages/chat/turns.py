"""The Chat page's turns: start one (send, edit and resend, regenerate, send without the
guard), show its events as they come (guard checks, the user's message, the answer streaming
in or held until checked), stop it, and end it.

A turn is one job of the context's runner (``turn_job`` in jobs.py). Stop cancels it: the
answer keeps the text that came, stored and shown as stopped, and no error is shown."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QMessageBox

from core.chat.session import ChatEvent, ChatSession
from core.errors import ContextOverflow
from core.safety.verdict import GuardVerdict
from desktop.pages.chat.jobs import TurnAction, TurnUpdate, turn_job
from desktop.pages.chat.sources import NO_KB_CHOSEN
from desktop.pages.chat.transcript import verdict_sentence

if TYPE_CHECKING:
    from core.chat.backends import PreparedPrompt
    from desktop.jobs import Worker
    from desktop.pages.chat.page import ChatPage

CHECKING = {"input": "Checking your message with the safety guard …",
            "output": "Checking the answer with the safety guard …",
            "documents": "Checking the retrieved passages with the safety guard …"}
HELD = ("Writing the answer ({tokens} so far). It is shown once the safety guard has checked "
        "it.")


class ChatTurns(QObject):
    """Runs the turns of one Chat page, one at a time."""

    def __init__(self, page: ChatPage) -> None:
        super().__init__(page)
        self.page = page
        self.worker: Worker[int | None] | None = None  #: the running turn (Stop cancels it)
        self._streaming = False  #: the answer is being shown as it comes
        self._pending_clear = False  #: empty the message box once the message is stored

    @property
    def running(self) -> bool:
        return self.worker is not None

    def send(self) -> None:
        """Send the typed message (or, while editing an earlier one, replace it and resend)."""
        page = self.page
        text = page.input.toPlainText()
        if self.running:
            return
        if not text.strip():
            page.error.setText("The message is empty: type something to send.")
            return
        if page.backend is None:
            page.error.setText("Pick a model first (and wait until it is open)."
                               if not page.backend_ref else f"{page.backend_ref} is still opening.")
            return
        editing = page.editing_id

        def action(s: ChatSession, d: bool) -> Iterator[ChatEvent]:
            if editing is not None:
                return s.edit_and_resend(editing, text, drop_oldest=d)
            return s.send(text, drop_oldest=d)

        self.start(action, None, clear_input=True)

    def regenerate(self) -> None:
        """Answer the last message again (Regenerate, and Retry after an interrupted answer)."""
        if self.page.backend is None or self.running:
            return
        self.start(lambda s, d: s.regenerate(drop_oldest=d), None)

    def send_unguarded(self, reason: str) -> None:
        """Send the message the guard could not check, this once without the guard; the
        message, its answer and the audit log record the choice and ``reason``."""
        if self.page.backend is None or self.running:
            return
        self.start(lambda s, d: s.regenerate(drop_oldest=d, unguarded=reason), None)

    def start(self, action: TurnAction, drop_oldest: bool | None, *,
              clear_input: bool = False) -> None:
        page = self.page
        page.error.clear()
        if page.backend is None:  # e.g. another model was asked for meanwhile
            return
        if page.use_docs.isChecked() and not page.kbs.chosen():
            page.error.setText(NO_KB_CHOSEN)
            return
        ctx = page.ctx
        drop = ctx.settings.chat.drop_oldest if drop_oldest is None else drop_oldest
        session = page.session(page.backend)  # built here: it reads the widgets
        self._streaming = False
        self._pending_clear = clear_input
        page.offer_unguarded("")
        page.meter.set_answer(0)  # the new answer has no tokens yet
        page.send_button.setEnabled(False)
        page.stop_button.setEnabled(True)
        ctx.jobs.drop("chat-inspect")  # a count of the draft is stale once it is sent
        self.worker = ctx.jobs.run(
            turn_job, session, action, drop, page.chat_guard, copy.deepcopy(ctx.settings),
            group="chat-turn",
            interrupt=session.cancel, on_partial=self._on_partial,
            on_result=self._finished, on_cancelled=self._stopped,
            on_error=lambda exc: self._failed(exc, action, clear_input),
            on_done=self._done)

    def stop(self) -> None:
        """Stop the answer: it keeps the text that came (``_stopped``), no error."""
        if self.worker is not None:
            self.worker.cancel()

    def _on_partial(self, item: TurnUpdate) -> None:
        page = self.page
        kind, payload, tokens = item
        if isinstance(payload, str):
            if kind == "delta":
                if not self._streaming:  # the answer starts under the checked message
                    self._streaming = True
                    page.transcript.begin_stream()
                page.transcript.append_stream(payload)
                page.meter.set_answer(tokens)
            elif kind == "held":
                page.set_guard_status(HELD.format(
                    tokens="1 token" if tokens == 1 else f"{tokens} tokens"))
                page.meter.set_answer(tokens)
            elif kind == "checking":
                page.set_guard_status(CHECKING.get(payload, CHECKING["output"]))
            elif kind == "status":
                page.set_guard_status(payload)
            return
        ev = payload
        if ev.kind == "started":
            page.set_guard_status("")
            count = _prompt_tokens(ev.prompt)
            if count is not None:
                page.meter.set_prompt(count)
            if self._pending_clear:
                page.input.clear()
                page.cancel_edit()
            if ev.user_message is not None:
                page.conversation_id = ev.user_message.conversation_id
            page.show_conversation(upto_position=ev.user_message.position
                                   if ev.user_message else None)
            for cite in ev.citations:
                if cite.get("verdict"):
                    self._saw(cite["verdict"])
            if ev.dropped_turns:
                page.ctx.status(f"Dropped the {ev.dropped_turns} oldest turn(s) to fit.")
        elif ev.kind == "verdict":
            page.set_guard_status("")
            self._saw(ev.verdict)
            if ev.direction == "input" and ev.message is not None:
                page.show_conversation(upto_position=ev.message.position)  # with its badge
            else:
                self._streaming = False
                page.show_conversation()
        elif ev.kind == "blocked":
            verdict = ev.verdict or {}
            if verdict.get("verdict") in ("unavailable", "unknown"):  # the guard failed
                failed = GuardVerdict.from_dict(verdict)
                page.error.setText(f"Not sent: {failed.failure_sentence()}")
                page.offer_unguarded(failed.reason)
            else:
                page.error.setText("Your message was not sent to the model. "
                                   + verdict_sentence(verdict))

    def _saw(self, verdict: dict[str, Any] | None) -> None:
        self.page.chat_guard.saw(verdict)
        self.page.show_guard_note()

    def _finished(self, cid: int | None) -> None:
        if cid is not None:
            self.page.conversation_id = cid
        self.page.show_conversation()
        self.page.refresh_list()

    def _stopped(self, cid: object) -> None:
        """Stop (or the window closing) ended the turn. The session stored the answer so far,
        marked stopped (or interrupted, when the stream broke off): show the conversation as
        stored, and no error. ``cid`` is the conversation id when the turn ran to its end."""
        self._finished(cid if isinstance(cid, int) else None)

    def _failed(self, exc: BaseException, action: TurnAction, clear_input: bool) -> None:
        page = self.page
        if isinstance(exc, ContextOverflow):
            answer = QMessageBox.question(
                page, "The conversation does not fit",
                f"{exc.sentence()}\n\nDrop the oldest turns from the prompt and send anyway?")
            if answer == QMessageBox.StandardButton.Yes:
                QTimer.singleShot(0, lambda: self.start(action, True, clear_input=clear_input))
                return
        page.error.setText(page.ctx.show_error(exc))
        page.show_conversation()
        page.refresh_list()

    def _done(self) -> None:
        page = self.page
        self.worker = None
        self._streaming = False
        page.set_guard_status("")
        page.show_guard_note()
        page.send_button.setEnabled(True)
        page.stop_button.setEnabled(False)
        page.prompt_watch.refresh()  # the meter counts the history the turn left
        page.turn_done.emit()


def _prompt_tokens(prompt: PreparedPrompt | None) -> int | None:
    """The exact token count of what a turn sends, when the backend knows it."""
    if prompt is None:
        return None
    return len(prompt.token_ids) if prompt.token_ids is not None else prompt.token_count
