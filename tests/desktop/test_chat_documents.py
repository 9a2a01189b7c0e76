"""Chat grounded in documents, driven as a user would: a tiny knowledge base (a 2-page PDF and a
text file, indexed with the real MiniLM embedder), "Use documents" on, the tiny GGUF answering.
The answer lists numbered references with pages; one click opens the exact chunk; "Retrieval
only" shows the hits without generating; the references come back after a restart; and with
the guard checking passages, one judged unsafe never reaches the prompt."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from desktop.pages.chat.page import ChatPage
from tests.desktop.chat_actions import click_link, open_page, send
from tests.fixtures.documents import HANDBOOK_PAGE_TWO

pytestmark = pytest.mark.slow

WAIT = 120_000
GUARD = "llama-guard3:8b"
QUESTION = "How do planets move around the sun?"
PAGE_TWO = HANDBOOK_PAGE_TWO


# --- what a user does (besides tests/desktop/chat_actions.py) ---------------------------------


def open_tiny(qtbot, ctx, ref: Path) -> ChatPage:
    """The Chat page on the tiny GGUF, answering briefly and the same way each time."""
    page = open_page(qtbot, ctx, str(ref), width=1280)
    page.params_form.max_tokens.setValue(8)
    page.params_form.temperature.setValue(0.0)
    return page


def use_documents(qtbot, page: ChatPage, kb: str = "Handbook") -> None:
    with qtbot.waitSignal(page.kbs.listed, timeout=WAIT):
        qtbot.mouseClick(page.use_docs, Qt.MouseButton.LeftButton)
    assert page.use_docs.isChecked()
    page.kb_box.setCurrentIndex(page.kb_box.findText(kb))
    assert page.kb_box.currentText() == kb


def screenshot(page: ChatPage, name: str) -> None:
    if os.environ.get("CORRAL_SCREENSHOTS"):
        page.grab().save(f"/tmp/{name}.png")


# --- tests ------------------------------------------------------------------------------------


def test_answer_cites_its_sources_and_a_reference_opens_the_chunk(
        qtbot, ctx, handbook: Path, tiny_gguf: Path) -> None:
    page = open_tiny(qtbot, ctx, tiny_gguf)
    use_documents(qtbot, page)
    send(qtbot, page, QUESTION, timeout=WAIT)
    assert page.error.text() == ""
    answer = page.store.messages(page.conversation_id)[-1]
    assert answer.role == "assistant" and answer.content
    first = answer.citations[0]
    assert (first["n"], first["file_name"], first["page"]) == (1, "guide.pdf", 2)
    shown = page.transcript.toPlainText()
    assert "Sources" in shown and "[1] guide.pdf, page 2 (score 0." in shown
    assert all(f"[{c['n']}] " in shown for c in answer.citations)
    assert "violins.txt (score" in shown or len(answer.citations) < 3  # no page for text

    # a click on the reference opens the exact chunk: path, page, chunk index, score, text
    assert page.sources.isHidden()
    click_link(qtbot, page, "[1] guide.pdf, page 2")
    assert page.sources.isVisible()
    assert page.sources.text.toPlainText() == PAGE_TWO
    details = page.sources.details.text()
    assert str(handbook / "guide.pdf") in details
    assert ">Page</td><td>2<" in details and ">Chunk</td><td>1<" in details
    assert f"{first['score']:.3f}" in details
    screenshot(page, "chat-docs")

    # a restart (new page, same CORRAL_HOME) shows the stored references, which still open
    cid = page.conversation_id
    again = ChatPage(ctx)
    qtbot.addWidget(again)
    again.resize(1280, 800)
    again.show()
    qtbot.waitExposed(again)
    with qtbot.waitSignal(again.kbs.listed, timeout=WAIT):
        again.conversations.list.setCurrentRow(0)
    assert again.conversation_id == cid
    assert again.use_docs.isChecked() and again.kb_box.currentText() == "Handbook"
    assert "[1] guide.pdf, page 2 (score 0." in again.transcript.toPlainText()
    click_link(qtbot, again, "[1] guide.pdf, page 2")
    assert again.sources.text.toPlainText() == PAGE_TWO
    qtbot.waitUntil(lambda: again.backend is not None, timeout=WAIT)


def test_retrieval_only_shows_the_hits_without_calling_the_model(
        qtbot, ctx, handbook: Path, tiny_gguf: Path, monkeypatch) -> None:
    page = open_tiny(qtbot, ctx, tiny_gguf)
    calls: list[str] = []
    for name in ("prepare", "stream"):
        monkeypatch.setattr(page.backend, name, lambda *a, n=name, **k: calls.append(n))
    assert not page.retrieval_button.isEnabled()  # documents are off
    use_documents(qtbot, page)
    page.input.setPlainText(QUESTION)
    with qtbot.waitSignal(page.retrieval_done, timeout=WAIT):
        qtbot.mouseClick(page.retrieval_button, Qt.MouseButton.LeftButton)
    assert page.error.text() == ""
    panel = page.sources
    assert panel.isVisible() and "Retrieval only, nothing generated" in panel.summary.text()
    labels = [panel.refs.item(i).text() for i in range(panel.refs.count())]
    assert labels[0].startswith("[1] guide.pdf, page 2 (score 0."), labels
    assert panel.text.toPlainText() == PAGE_TWO  # the first hit is open
    assert calls == [] and page.store.conversations() == []  # nothing generated or stored
    assert page.input.toPlainText() == QUESTION  # the message stays, ready to send

    # a knowledge base made elsewhere (Documents page) appears in the picker; choice kept
    from core.rag.knowledge_base import create_kb

    create_kb("Atlas", settings=ctx.settings).close()
    with qtbot.waitSignal(page.kbs.listed, timeout=WAIT):
        ctx.bus.knowledge_bases_changed.emit()
    assert [page.kb_box.itemText(i) for i in range(page.kb_box.count())] == ["Atlas", "Handbook"]
    assert page.kb_box.currentText() == "Handbook"


@pytest.mark.ollama
def test_a_passage_the_guard_judges_unsafe_is_left_out(
        qtbot, ctx, handbook: Path, tiny_gguf: Path, ollama_server, monkeypatch) -> None:
    from core.safety.audit import AuditLog

    ollama_server.add_model(GUARD, family="llama")
    ctx.settings.ollama.host = ollama_server.host
    s = ctx.settings.safety
    s.enabled, s.guard_model, s.guard_version = True, f"ollama:{GUARD}", "llama-guard-3"
    s.check_input, s.check_output, s.check_documents = False, False, True
    ctx.settings.chat.documents_k = 2
    page = open_tiny(qtbot, ctx, tiny_gguf)
    assert "document passages" in page.guard_note.toolTip()
    prompts: list[str] = []
    prepare = page.backend.prepare

    def spy(messages, fmt, tags):
        prompts.append(messages[-1].content)
        return prepare(messages, fmt, tags)

    monkeypatch.setattr(page.backend, "prepare", spy)
    use_documents(qtbot, page)
    ollama_server.script_generate(["unsafe\nS1"])  # both passages, in one call; then
    ollama_server.script_generate(["unsafe\nS1"])  # the best passage ...
    ollama_server.script_generate(["safe"])  # ... and the next one
    send(qtbot, page, QUESTION, timeout=WAIT)
    assert page.error.text() == ""
    checks = ollama_server.requests_to("/api/generate")
    assert PAGE_TWO in checks[0].body["prompt"]  # the guard saw the best passage first
    assert PAGE_TWO not in prompts[-1]  # and it never reached the chat model's prompt
    answer = page.store.messages(page.conversation_id)[-1]
    left = [c for c in answer.citations if c.get("left_out")]
    assert [(c["file_name"], c["page"]) for c in left] == [("guide.pdf", 2)]
    assert all(PAGE_TWO not in c["text"] for c in answer.citations)
    shown = page.transcript.toPlainText()
    assert ("Left out of the prompt: a passage from guide.pdf, page 2, judged unsafe by the "
            "safety guard (S1 Violent Crimes).") in shown
    assert [e.direction for e in AuditLog().entries()] == ["document"] * len(checks)
    screenshot(page, "chat-docs-guard")
    ctx.jobs.wait_all()
