"""The fault table (tests/core/test_guard_faults.py) through the Chat page, as a user meets it:
the guard cannot be built or cannot answer, so Send is blocked with a sentence that names the
cause and the fix, the toolbar says the guard is unavailable, and "Send without the guard"
sends that one message unchecked (the conversation and the audit log record it). With the
setting on "warn" the message goes through, and the page says it was not checked. Stop stops a
check that does not end by itself, on llama.cpp and through Ollama."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
from PySide6.QtCore import Qt

from core.safety.audit import AuditLog
from core.safety.guard import STOPPED, was_stopped
from desktop.pages.chat.page import ChatPage
from tests.core.test_guard_faults import (
    FAULTS,
    Env,
    Fault,
    _wrap_generate,
    assert_logged,
    gguf_guard,
    ollama_guard,
)
from tests.desktop.chat_actions import WAIT, open_page, send
from tests.desktop.test_chat_safety import badges, screenshot

QUESTION = "How do I bake bread?"

pytestmark = pytest.mark.ollama


@pytest.fixture(scope="module")
def guards(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("guards")


@pytest.fixture(autouse=True, scope="module")
def close_engines():
    yield
    from core.models.pool import close_all

    close_all()


def guarded_page(qtbot, ctx, fault: Fault, mode: str, ollama_server, guards, tmp_path,
                 monkeypatch, tiny_gguf) -> tuple[ChatPage, Env]:
    """The Chat page on the tiny GGUF with the guard of ``fault`` chosen, built and sabotaged
    as the row says; "when the guard is unavailable" set to ``mode``. Keep the Env while the
    page is used: it holds what the row holds (the lock on the audit log)."""
    settings = ctx.settings
    settings.ollama.host = ollama_server.host
    settings.ollama.read_timeout = 10
    s = settings.safety
    s.enabled, s.when_unavailable, s.timeout_s = True, mode, 30.0
    env = Env(settings, ollama_server, guards, tmp_path, monkeypatch, [])
    fault.arrange(env)
    page = open_page(qtbot, ctx, str(tiny_gguf))
    page.params_form.max_tokens.setValue(4)
    page.params_form.temperature.setValue(0.0)
    qtbot.waitUntil(lambda: page.guard_built, timeout=WAIT)
    if fault.sabotage is not None:
        fault.sabotage(page.guard, env)
    return page, env


@pytest.mark.parametrize("name", list(FAULTS))
def test_send_is_blocked_with_the_cause_and_the_fix(
        name, qtbot, ctx, ollama_server, guards, tmp_path, monkeypatch, tiny_gguf,
        caplog) -> None:
    caplog.set_level(logging.WARNING, "corral.safety")
    fault = FAULTS[name]
    page, _env = guarded_page(qtbot, ctx, fault, "block", ollama_server, guards, tmp_path,
                              monkeypatch, tiny_gguf)
    if not fault.built:  # known before anything is sent: the toolbar says so already
        assert page.guard_note.text() == "Guard unavailable: messages blocked"
        assert fault.cause in page.guard_note.toolTip()
    else:
        assert page.guard_note.text().startswith("Guard: ")
    send(qtbot, page, QUESTION)
    [user] = page.store.messages(page.conversation_id)  # kept, not sent: no answer
    assert user.verdict["verdict"] == fault.verdict and user.verdict["action"] == "block"
    error = page.error.text()
    assert fault.cause in error and (not fault.fix or fault.fix in error), error
    assert "Not sent to the model." in page.transcript.toPlainText()
    ctx.jobs.wait_all()
    assert_logged(fault, caplog, ["input"])
    if fault.verdict == "unsafe":  # the guard answered: not a fault of the guard itself
        assert error.startswith("Your message was not sent to the model.")
        assert page.unguarded_button.isHidden()
        assert page.guard_note.text().startswith("Guard: ")
        return
    assert error.startswith("Not sent: the safety guard could not check your message: "
                            if fault.verdict == "unavailable"
                            else "Not sent: the safety guard's answer was not understood: ")
    assert page.unguarded_button.isVisible()
    expected = ("Guard answer not understood" if fault.verdict == "unknown"
                else "Guard unavailable: messages blocked")
    assert page.guard_note.text() == expected
    assert page.guard_note.objectName() == "errorText"


@pytest.mark.parametrize("name", ["audit log damaged", "guard model missing", "server down",
                                  "engine killed mid-answer", "'safe' and more text"])
def test_send_without_the_guard_sends_that_one_message_and_records_it(
        name, qtbot, ctx, ollama_server, guards, tmp_path, monkeypatch, tiny_gguf) -> None:
    fault = FAULTS[name]
    page, _env = guarded_page(qtbot, ctx, fault, "block", ollama_server, guards, tmp_path,
                              monkeypatch, tiny_gguf)
    send(qtbot, page, QUESTION)
    reason = page.unguarded_reason
    assert fault.cause in reason
    screenshot(page, "chat-guard-unavailable-" + "-".join(name.replace("'", "").split()[:2]))
    with qtbot.waitSignal(page.turn_done, timeout=WAIT):
        qtbot.mouseClick(page.unguarded_button, Qt.MouseButton.LeftButton)
    user, answer = page.store.messages(page.conversation_id)
    assert answer.content and (user.unguarded, answer.unguarded) == (reason, reason)
    assert badges(page) == [("user", "sent without the guard"),
                            ("assistant", "sent without the guard")]
    shown = page.transcript.toPlainText()
    assert "You sent this message without the safety guard" in shown and answer.content in shown
    assert "Not sent to the model." not in shown
    assert page.error.text() == "" and page.unguarded_button.isHidden()
    if not fault.audit_broken:
        override = AuditLog().entries()[0]
        assert override.reason == f"sent without the guard by the user's choice: {reason}"
    # one message only: the next is checked (and blocked) again
    send(qtbot, page, "And rye bread?")
    assert page.store.messages(page.conversation_id)[-1].verdict["action"] == "block"
    assert page.unguarded_button.isVisible()
    ctx.jobs.wait_all()


@pytest.mark.parametrize("name", [n for n, f in FAULTS.items() if f.verdict != "unsafe"])
def test_with_warn_the_message_goes_through_marked_unchecked(
        name, qtbot, ctx, ollama_server, guards, tmp_path, monkeypatch, tiny_gguf,
        caplog) -> None:
    """Every row but an undefined category (the strictest action, always: above)."""
    caplog.set_level(logging.WARNING, "corral.safety")
    fault = FAULTS[name]
    page, _env = guarded_page(qtbot, ctx, fault, "warn", ollama_server, guards, tmp_path,
                              monkeypatch, tiny_gguf)
    send(qtbot, page, QUESTION)
    user, answer = page.store.messages(page.conversation_id)
    assert answer.content and page.error.text() == "" and page.unguarded_button.isHidden()
    assert [v["action"] for v in (user.verdict, answer.verdict)] == ["warn", "warn"]
    assert all(text.startswith("warning · ") for _, text in badges(page)), badges(page)
    shown = page.transcript.toPlainText()
    assert shown.count("let it through with a warning when the guard cannot judge") == 2
    assert answer.content in shown
    assert page.guard_note.text() in ("Guard unavailable: warnings only",
                                      "Guard answer not understood")
    ctx.jobs.wait_all()
    assert_logged(fault, caplog, ["input", "output"])


def test_a_guard_that_works_again_clears_the_toolbar(
        qtbot, ctx, ollama_server, guards, tmp_path, monkeypatch, tiny_gguf) -> None:
    page, _env = guarded_page(qtbot, ctx, FAULTS["server answers 500"], "block",
                              ollama_server, guards, tmp_path, monkeypatch, tiny_gguf)
    for text in (QUESTION, "Please?"):  # the row makes the server fail twice
        send(qtbot, page, text)
        assert page.guard_note.text() == "Guard unavailable: messages blocked"
    ollama_server.script_generate(["safe"])  # the server is well again
    ollama_server.script_generate(["safe"])
    send(qtbot, page, "And rye bread?")
    assert page.guard_note.text() == "Guard: ollama:llama-guard3:8b"
    assert page.guard_note.objectName() == "emptyState"
    ctx.jobs.wait_all()


# --- Stop during a check ------------------------------------------------------------------------


def stall_ollama(direction: str) -> Callable[[Env], None]:
    """The guard through the loopback Ollama; the check of ``direction`` gets no answer (the
    server holds the request until the client hangs up)."""
    def arrange(env: Env) -> None:
        ollama_guard(env)
        if direction == "output":
            env.server.script_generate(["safe"])  # the message is checked
        env.server.script_generate([], hold=True)
    return arrange


def stall_engine(direction: str) -> Callable[[Env], None]:
    def arrange(env: Env) -> None:
        gguf_guard("safe")(env)
        env.settings.safety.check_input = direction == "input"
    return arrange


def freeze(stalled: threading.Event) -> Callable[[Any, Env], None]:
    """SIGSTOP of the guard's engine child as the check asks for its answer."""
    def sabotage(guard: Any, env: Env) -> None:
        def stop(engine: Any, event: Any) -> None:
            if event is None and engine.pid is not None and not stalled.is_set():
                os.kill(engine.pid, signal.SIGSTOP)
                stalled.set()

        _wrap_generate(guard, env.monkeypatch, stop)
    return sabotage


@pytest.mark.parametrize("direction", ["input", "output"])
@pytest.mark.parametrize("runner", ["Ollama", "llama.cpp"])
def test_stop_stops_a_running_check(runner, direction, qtbot, ctx, ollama_server, guards,
                                    tmp_path, monkeypatch, tiny_gguf) -> None:
    """The guard's check does not end by itself (the time limit is 30 s away); Stop ends it,
    and the turn with it: stopped during the check of the message, nothing is stored or sent
    and the message stays in the box; during that of the answer, the answer is kept hidden,
    not checked. The toolbar still says the guard works: the user stopped it."""
    stalled = threading.Event()
    if runner == "Ollama":
        fault = Fault(stall_ollama(direction), "unavailable", "")

        def running() -> bool:
            calls = len(ollama_server.requests_to("/api/generate"))
            return calls == (2 if direction == "output" else 1)
    else:
        fault = Fault(stall_engine(direction), "unavailable", "", sabotage=freeze(stalled))
        running = stalled.is_set
    page, _env = guarded_page(qtbot, ctx, fault, "block", ollama_server, guards, tmp_path,
                              monkeypatch, tiny_gguf)
    page.input.setPlainText(QUESTION)
    checking = "Checking your message" if direction == "input" else "Checking the answer"
    with qtbot.waitSignal(page.turn_done, timeout=WAIT):
        qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: checking in page.guard_status.text() and running(),
                        timeout=WAIT)
        assert not ollama_server.hung_up.is_set()  # the check runs, nobody left it
        screenshot(page, f"chat-guard-stop-{direction}-{runner.replace('.', '')}")
        qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    if runner == "Ollama":
        assert ollama_server.hung_up.wait(30)  # Stop cut the check's request
    [entry, *_] = AuditLog().entries()
    assert (entry.direction, entry.verdict) == (direction, "unavailable")
    assert entry.reason.endswith(STOPPED)  # stopped, not timed out
    assert page.error.text() == "" and page.unguarded_button.isHidden()
    assert page.guard_note.text().startswith("Guard: ")  # the guard did not fail
    assert page.guard_status.isHidden() and page.send_button.isEnabled()
    if direction == "input":
        assert page.conversation_id is None or not page.store.messages(page.conversation_id)
        assert page.input.toPlainText() == QUESTION  # nothing is lost: send it again
        assert QUESTION not in page.transcript.toPlainText()
        return
    user, answer = page.store.messages(page.conversation_id)
    assert answer.content and was_stopped(answer.verdict)
    assert answer.verdict["action"] == "block"  # as the setting says for a guard that fails
    assert badges(page)[-1] == ("assistant", "not checked: the guard could not run")
    shown = page.transcript.toPlainText()
    assert "This answer is hidden." in shown and STOPPED in shown
    assert "Regenerate the answer to have it checked." in shown
    assert answer.content not in shown  # never shown as if it had been checked
    screenshot(page, f"chat-guard-stopped-output-{runner.replace('.', '')}")
    ctx.jobs.wait_all()
