"""The Chat page end to end on real weights (SmolLM2-135M-Instruct, ChatML), as a user would:
open the model by its path in the model box, send with Ctrl+Return, watch the answer stream in
under "Assistant" on its own line, see the meter count the history, and Stop a longer answer,
which keeps its partial text without an error."""

from __future__ import annotations

import os

import pytest
from PySide6.QtCore import Qt

from desktop.pages.chat.page import ChatPage
from tests.desktop.chat_actions import WAIT

pytestmark = pytest.mark.real_model


def open_by_path(qtbot, ctx, path: str) -> ChatPage:
    page = ChatPage(ctx)
    qtbot.addWidget(page)
    page.resize(1280, 820)
    page.show()
    qtbot.waitExposed(page)
    page.activateWindow()
    qtbot.waitActive(page)
    qtbot.keyClicks(page.model_box, path)
    qtbot.keyClick(page.model_box, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: page.backend is not None or bool(page.error.text()), timeout=WAIT)
    assert page.backend is not None, page.error.text()
    return page


def ctrl_return(qtbot, page: ChatPage, text: str) -> None:
    page.input.setFocus()
    qtbot.keyClicks(page.input, text)
    qtbot.keyClick(page.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)


def test_a_real_conversation_streams_counts_and_stops(qtbot, ctx, smollm2) -> None:
    errors: list[str] = []
    ctx.bus.error.connect(errors.append)
    page = open_by_path(qtbot, ctx, str(smollm2))
    assert "model" in page.format_note.text()  # ChatML: the model's own template
    page.params_form.max_tokens.setValue(24)
    page.params_form.temperature.setValue(0.0)
    page.params_form.context_length.setValue(2048)

    streamed: list[list[str]] = []  # the transcript's lines while the answer streams in
    page.transcript.textChanged.connect(
        lambda: streamed.append(page.transcript.toPlainText().splitlines())
        if page.transcript.streaming_text else None)
    with qtbot.waitSignal(page.turn_done, timeout=WAIT):
        ctrl_return(qtbot, page, "Why is the sky blue?")
        assert page.turns.running  # Ctrl+Return sent it
    [user, answer] = page.store.messages(page.conversation_id)
    assert user.content == "Why is the sky blue?"
    assert answer.content.strip() and answer.finish_reason in ("stop", "length")
    # while it streamed: the message, then "Assistant" on its own line, then the text so far
    assert streamed
    for lines in streamed:
        at = lines.index("Assistant")
        assert lines[at - 1] == "Why is the sky blue?" and lines[at + 1].strip()
    # and once it ended, the answer as stored, under its header
    lines = page.transcript.toPlainText().splitlines()
    at = lines.index("Why is the sky blue?")
    assert lines[at + 1].startswith("Assistant")
    assert lines[at + 2].strip() and lines[at + 2].strip() in answer.content
    assert page.error.text() == "" and errors == []
    # with the message box empty again, the meter counts the conversation, exactly
    qtbot.waitUntil(lambda: page.prompt_watch.worker is not None
                    and page.prompt_watch.worker.is_done, timeout=WAIT)
    assert page.input.toPlainText() == ""
    assert page.meter.history > 0 and page.meter.exact and "≈" not in page.meter.text()
    assert page.meter.length == 2048 and "of 8,192 trained" in page.meter.text()
    if os.environ.get("CORRAL_SCREENSHOTS"):
        page.grab().save("/tmp/chat_smollm2.png")

    # Stop during a longer answer: it ends at once, keeps what came, and says nothing wrong
    page.params_form.max_tokens.setValue(400)
    ctrl_return(qtbot, page, "Write a long story about a dragon who learns to bake bread.")
    qtbot.waitUntil(lambda: page.meter.answer >= 3 or not page.turns.running, timeout=WAIT)
    assert page.turns.running, "the answer ended before Stop"
    with qtbot.waitSignal(page.turn_done, timeout=WAIT):
        qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    stopped = page.store.messages(page.conversation_id)[-1]
    assert stopped.finish_reason == "cancelled" and stopped.content.strip()
    assert (stopped.completion_tokens or 0) < 400
    assert stopped.content.strip()[:20] in page.transcript.toPlainText()
    assert "stopped" in page.transcript.toPlainText()
    assert page.error.text() == "" and errors == []
    ctx.jobs.wait_all()
