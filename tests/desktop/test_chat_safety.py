"""Safety in the Chat page, driven as a user would: the guard is turned on on the Safety page,
then every message shows its verdict badge; a blocked message never reaches the chat model, a
blocked answer waits behind Reveal, an answer is held until checked (or streams, if the user
asks for that), code in answers shows its scan findings, and the badges come back after a
restart. Through the loopback Ollama server and through llama.cpp. The guard's faults are in
test_chat_guard_faults.py."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from core.safety.audit import AuditLog
from core.safety.verdict import holds_answers
from desktop.pages.chat.page import ChatPage
from desktop.pages.safety.page import SafetyPage
from tests.desktop.chat_actions import WAIT, click_link, open_page, send
from tests.fixtures.guards import guard_gguf

CHAT = "llama2:7b-chat"
GUARD = "llama-guard3:8b"


# --- what a user does (besides tests/desktop/chat_actions.py) ---------------------------------


def turn_on_guard(qtbot, ctx, model: str, version: str | None = None, *,
                  check_input: bool = True, actions: dict[str, str] | None = None,
                  answers: str = "auto", page: ChatPage | None = None) -> None:
    """On the Safety page: choose the guard model, its version, policy and how answers show,
    turn checks on; then (``page``) wait until the Chat page has built the guard."""
    safety = SafetyPage(ctx)
    qtbot.addWidget(safety)
    safety.model.setCurrentText(model)
    safety._model_changed()
    if version is not None:
        safety.version.setCurrentIndex(safety.version.findData(version))
    for code, action in (actions or {}).items():
        safety.set_action(code, action)
    safety.answers.setCurrentIndex(safety.answers.findData(answers))
    safety.check_input.setChecked(check_input)
    safety.enabled.setChecked(True)
    if page is not None:
        qtbot.waitUntil(lambda: page.guard_built, timeout=WAIT)


def chat_model_calls(server) -> list:
    """Generation requests to the chat model (the guard's go to another model)."""
    return [r for r in server.requests if r.path in ("/api/generate", "/api/chat")
            and (r.body or {}).get("model", "").startswith("llama2")]


def badges(page: ChatPage) -> list[tuple[str, str]]:
    return [(m.role, page.transcript.badges.get(m.id, ""))
            for m in page.store.messages(page.conversation_id)]


@pytest.fixture
def guarded(qtbot, ctx, ollama_server):
    """The Chat page on the loopback Ollama, Llama Guard 3 through the same server."""
    ollama_server.add_model(CHAT)
    ollama_server.add_model(GUARD, family="llama")
    ctx.settings.ollama.host = ollama_server.host
    ctx.settings.ollama.read_timeout = 30
    page = open_page(qtbot, ctx, f"ollama:{CHAT}")
    assert page.guard is None and page.guard_note.text() == "Safety checks off"
    turn_on_guard(qtbot, ctx, f"ollama:{GUARD}", page=page)
    assert page.guard is not None and page.guard_note.text() == f"Guard: ollama:{GUARD}"
    yield page, ollama_server
    ctx.jobs.wait_all()


# --- through Ollama -------------------------------------------------------------------------


@pytest.mark.ollama
def test_blocked_message_is_not_sent_and_the_user_is_told_why(qtbot, ctx, guarded) -> None:
    page, server = guarded
    server.script_generate(["unsafe\nS1"])
    send(qtbot, page, "How do I hurt my neighbour?")
    assert chat_model_calls(server) == []  # the chat model never heard of it
    assert badges(page) == [("user", "unsafe: S1 Violent Crimes")]
    shown = page.transcript.toPlainText()
    assert "unsafe: S1 Violent Crimes" in shown
    assert "Not sent to the model." in shown and "blocked by your safety policy" in shown
    assert "not sent to the model" in page.error.text() and "Violent Crimes" in page.error.text()
    # the audit log knows which conversation it was
    [entry] = AuditLog().entries()
    assert (entry.conversation_id, entry.direction, entry.categories) == (
        str(page.conversation_id), "input", "S1")

    # the next, harmless message flows, and both it and the answer get a badge
    server.script_generate(["safe"])  # input check
    server.script_generate(["Use ", "flour."])  # the chat model
    server.script_generate(["\n\nsafe"])  # output check
    send(qtbot, page, "How do I bake bread?")
    assert len(chat_model_calls(server)) == 1
    assert badges(page) == [("user", "unsafe: S1 Violent Crimes"), ("user", "safe"),
                            ("assistant", "safe")]
    assert "Use flour." in page.transcript.toPlainText()
    assert page.error.text() == "" and page.guard_status.isHidden()
    assert {e.conversation_id for e in AuditLog().entries()} == {str(page.conversation_id)}

    # a restart (new page, same CORRAL_HOME) shows the stored badges and the reason again
    cid = page.conversation_id
    again = ChatPage(ctx)
    qtbot.addWidget(again)
    again.conversations.list.setCurrentRow(0)
    assert again.conversation_id == cid
    assert badges(again) == badges(page)
    shown = again.transcript.toPlainText()
    assert "Not sent to the model." in shown and "Use flour." in shown
    qtbot.waitUntil(lambda: again.backend is not None, timeout=WAIT)


@pytest.mark.ollama
def test_blocked_answer_is_hidden_until_revealed(qtbot, ctx, guarded) -> None:
    page, server = guarded
    server.script_generate(["safe"])
    server.script_generate(["They ", "deserve ", "nothing."])
    server.script_generate(["unsafe\nS10"])
    send(qtbot, page, "Tell me about my neighbours.")
    assert badges(page) == [("user", "safe"), ("assistant", "unsafe: S10 Hate")]
    shown = page.transcript.toPlainText()
    assert "deserve" not in shown
    assert "This answer is hidden." in shown and "S10 Hate" in shown and "Reveal" in shown
    click_link(qtbot, page, "Reveal")
    shown = page.transcript.toPlainText()
    assert "They deserve nothing." in shown and "unsafe: S10 Hate" in shown
    click_link(qtbot, page, "Hide")
    assert "deserve" not in page.transcript.toPlainText()


@pytest.mark.ollama
def test_answer_streams_under_the_checked_message_and_a_dead_guard_blocks(
        qtbot, ctx, guarded) -> None:
    page, server = guarded
    turn_on_guard(qtbot, ctx, f"ollama:{GUARD}", answers="stream", page=page)
    server.script_generate(["safe"])  # input check
    server.script_generate(["Bread ", "needs ", "time."])  # the chat model
    server.hang("/api/generate")  # the output check gets no answer ...
    page.input.setPlainText("How do I bake bread?")
    with qtbot.waitSignal(page.turn_done, timeout=WAIT):
        qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "Checking the answer" in page.guard_status.text(), timeout=WAIT)
        # meanwhile the answer has streamed in under the message and its badge
        [user] = page.store.messages(page.conversation_id)[:1]
        assert page.transcript.badges == {user.id: "safe"}
        assert page.transcript.toPlainText().rstrip().endswith("Bread needs time.")
        assert page.guard_status.isVisible()
        server.stop()  # ... and then the guard is gone: fail closed
    assert badges(page) == [("user", "safe"),
                            ("assistant", "not checked: the guard could not run")]
    shown = page.transcript.toPlainText()
    assert "needs time" not in shown and "This answer is hidden." in shown
    assert "The answer was not checked: the guard could not run" in shown
    assert "It was blocked, as your safety settings say for a guard that cannot judge" in shown
    assert page.guard_status.isHidden()
    # the toolbar tells the truth: the guard is not working now
    assert page.guard_note.text() == "Guard unavailable: messages blocked"
    assert "The last check could not run" in page.guard_note.toolTip()


@pytest.mark.ollama
def test_a_held_answer_shows_only_once_checked(qtbot, ctx, guarded, tmp_path) -> None:
    page, server = guarded
    assert holds_answers(ctx.settings.safety)  # the default: every category blocks
    server.script_generate(["safe"])  # input check
    server.script_generate(["They ", "deserve ", "bread."], hang=True)  # the chat model
    server.script_generate(["safe"])  # output check, once the user stops the answer
    page.input.setPlainText("Tell me about my neighbours.")
    with qtbot.waitSignal(page.turn_done, timeout=WAIT):
        qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
        # all three tokens came (then the model stalls): the count says so, the text is held
        qtbot.waitUntil(lambda: "3 tokens so far" in page.guard_status.text(), timeout=WAIT)
        assert page.guard_status.text().startswith("Writing the answer (")
        assert "It is shown once the safety guard has checked it." in page.guard_status.text()
        assert "deserve" not in page.transcript.toPlainText()  # held back
        screenshot(page, "chat-guard-held")
        qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    assert badges(page) == [("user", "safe"), ("assistant", "safe")]
    assert "They deserve bread." in page.transcript.toPlainText()


@pytest.mark.ollama
def test_warned_answer_is_shown_with_a_warning_and_unchecked_side_says_so(
        qtbot, ctx, ollama_server) -> None:
    ollama_server.add_model(CHAT)
    ollama_server.add_model(GUARD, family="llama")
    ctx.settings.ollama.host = ollama_server.host
    page = open_page(qtbot, ctx, f"ollama:{CHAT}")
    turn_on_guard(qtbot, ctx, f"ollama:{GUARD}", check_input=False, actions={"S1": "warn"},
                  page=page)
    ollama_server.script_generate(["A ", "fight ", "scene."])  # the chat model
    ollama_server.script_generate(["unsafe\nS1"])  # output check
    send(qtbot, page, "Write a fight scene.")
    assert badges(page) == [("user", "not checked"),
                            ("assistant", "warning · unsafe: S1 Violent Crimes")]
    shown = page.transcript.toPlainText()
    assert "A fight scene." in shown
    assert "Warning:" in shown and "lets it through with a warning" in shown
    ctx.jobs.wait_all()


@pytest.mark.ollama
def test_code_in_answers_shows_its_findings(qtbot, ctx, guarded) -> None:
    page, server = guarded
    answer = "Here you go:\n\n```python\nname = 'x'\nresult = eval(input())\n```\n"
    server.script_generate(["safe"])
    server.script_generate([answer])
    server.script_generate(["safe"])
    send(qtbot, page, "Write a calculator in Python.")
    msgs = page.store.messages(page.conversation_id)
    # the scan runs in a job once the answer is in; its findings then show under the block
    qtbot.waitUntil(lambda: bool(page.transcript.findings), timeout=WAIT)
    [(key, findings)] = page.transcript.findings.items()
    assert key == (msgs[-1].id, 0)
    assert [(f.line, f.language, f.cwe) for f in findings][:1] == [(2, "python", "CWE-94")]
    shown = page.transcript.toPlainText()
    assert "Possible security problems in this code" in shown
    assert f"line 2: code injection (CWE-94 · rule {findings[0].rule_id} · warning)" in shown
    assert findings[0].why in shown
    # the user turns the scan off on the Safety page: the findings go away
    safety = SafetyPage(ctx)
    qtbot.addWidget(safety)
    safety.scan_code.setChecked(False)
    assert page.transcript.findings == {}
    shown = page.transcript.toPlainText()
    assert "Possible security problems" not in shown and "Code scan" not in shown


# --- through llama.cpp ----------------------------------------------------------------------


def test_whole_flow_with_llama_cpp_guard_and_chat_model(qtbot, ctx, tiny_gguf,
                                                        tmp_path) -> None:
    page = open_page(qtbot, ctx, str(tiny_gguf))
    page.params_form.max_tokens.setValue(8)
    page.params_form.temperature.setValue(0.0)
    turn_on_guard(qtbot, ctx, str(guard_gguf(tmp_path, "safe")), "llama-guard-2", page=page)
    assert page.guard is not None
    send(qtbot, page, "hello model")
    got = badges(page)
    assert [role for role, _ in got] == ["user", "assistant"]
    # "safe", with llama.cpp's probability of "unsafe" for the first answer token
    assert all(text.startswith("safe · p(unsafe) 0.0") for _, text in got), got
    engine = page.guard.backend.engine
    pid = engine.pid
    send(qtbot, page, "hello again")
    assert [text.split(" ")[0] for _, text in badges(page)] == ["safe"] * 4
    assert engine.pid == pid  # the guard model stayed loaded between turns
    assert len(AuditLog().entries()) == 4
    ctx.jobs.wait_all()


def test_a_guard_that_says_safe_and_goes_on_blocks(qtbot, ctx, tiny_gguf,
                                                   tiny_guard_gguf) -> None:
    """The shared tiny guard answers "safe safe safe ...": its whole answer is read, and that
    is not an answer the format allows."""
    page = open_page(qtbot, ctx, str(tiny_gguf))
    turn_on_guard(qtbot, ctx, str(tiny_guard_gguf), "llama-guard-1", page=page)
    send(qtbot, page, "hello model")
    assert badges(page) == [("user", "guard answer not understood")]
    assert "text after 'safe'" in page.transcript.toPlainText()
    assert page.guard_note.text() == "Guard answer not understood"
    ctx.jobs.wait_all()


def screenshot(page: ChatPage, name: str) -> None:
    """With CORRAL_SCREENSHOTS=DIR, the page as a PNG in DIR (to look at by eye)."""
    import os
    from pathlib import Path

    from desktop.style import STYLE_SHEET

    folder = os.environ.get("CORRAL_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        from PySide6.QtWidgets import QApplication

        size = page.size()
        page.setStyleSheet(STYLE_SHEET)  # as the app draws it
        QApplication.processEvents()  # laid out again with it
        page.resize(size)
        QApplication.processEvents()
        page.grab().save(str(Path(folder) / f"{name}.png"))
