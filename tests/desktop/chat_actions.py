"""What a user does in the chat transcript, shared by the chat page tests."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

from desktop.pages.chat.page import ChatPage


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
