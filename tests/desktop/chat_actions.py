"""What a user does on the Chat page, shared by the chat page tests: open a model, send a
message, click a link in the transcript."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

from core.chat.backends import BackendInfo, PreparedPrompt
from core.prompts.formats import render
from desktop.pages.chat.page import ChatPage


class ScriptedModel:
    """The parts of a scripted chat backend every page test shares: a llama2 GGUF named
    ``name`` with a 4,096-token context, whose prompts count 10 tokens. Subclasses stream."""

    name = "scripted"

    def info(self) -> BackendInfo:
        return BackendInfo("gguf", self.name, 4096, "llama2", "it is a test", True)

    def prepare(self, messages, fmt, tags) -> PreparedPrompt:
        r = render(messages, fmt, tags=tags)
        return PreparedPrompt(r, token_ids=[1], token_count=10, exact_text=r.text)

    def count(self, messages, fmt, tags) -> int:
        return 10

    def use_context(self, requested: int) -> int:
        return requested or 4096


WAIT = 60_000


def open_page(qtbot, ctx, ref: str, *, width: int = 1200, height: int = 800) -> ChatPage:
    """A Chat page on screen with model ``ref`` open."""
    page = ChatPage(ctx)
    qtbot.addWidget(page)
    page.resize(width, height)
    page.show()
    qtbot.waitExposed(page)
    page.open_model(ref)
    qtbot.waitUntil(lambda: page.backend is not None or bool(page.error.text()), timeout=WAIT)
    assert page.backend is not None, page.error.text()
    return page


def send(qtbot, page: ChatPage, text: str, *, timeout: int = WAIT) -> None:
    """Type ``text``, click Send and wait until the turn has ended."""
    page.input.setPlainText(text)
    with qtbot.waitSignal(page.turn_done, timeout=timeout):
        qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)


def click_link(qtbot, page: ChatPage, label: str) -> None:
    """Click the link with this label in the transcript, with the mouse."""
    view = page.transcript
    found = view.document().find(label)
    assert not found.isNull(), f"no {label!r} in the transcript"
    assert found.charFormat().anchorHref(), f"{label!r} is not a link"
    cursor = QTextCursor(view.document())
    cursor.setPosition(found.selectionStart() + 1)
    view.setTextCursor(cursor)
    view.ensureCursorVisible()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.cursorRect().center())
