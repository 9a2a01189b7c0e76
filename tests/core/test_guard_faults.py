"""The fault table: every way the safety guard can fail, through the chat session (core).

Each fault is run with "when the guard is unavailable" set to block (the default) and to warn.
Blocked: the message is stored as not sent, the chat model never runs, and the verdict names
the cause and the fix. Warned: the turn goes on, and the answer's check fails the same way.
Never, in any row, does a check read as safe; every check is logged (the audit log, or the
app's log when the audit log is what failed). An answer with a category the guard version
does not define blocks under both settings (the strictest action).

The chat model is the tiny GGUF in the engine child; the guard is a loopback Ollama server or a
tiny guard GGUF (tests/fixtures/guards.py) that answers what the row needs."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import core.models.engine as engine_module
import core.safety.audit as audit_module
import core.safety.guard_backends as backends_module
from core.chat.llama_backend import LlamaCppBackend
from core.chat.params import GenerationParams
from core.chat.session import ChatSession
from core.chat.store import HistoryStore
from core.config import Settings
from core.safety.audit import AuditLog, default_audit_path
from core.safety.guard import GuardService, UnavailableGuard, guard_from_settings
from tests.fixtures.guards import guard_gguf

GUARD = "llama-guard3:8b"
QUESTION = "How do I bake bread?"

pytestmark = pytest.mark.usefixtures("close_engines")  # tests/core/conftest.py


@dataclass
class Env:
    settings: Settings
    server: Any  # the loopback Ollama server the Ollama rows use
    guards: Path  # the tiny guard GGUFs
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    held: list[Any]  # things to keep alive (a connection holding the audit log's lock)


def ollama_guard(env: Env) -> None:
    env.settings.safety.guard_model = f"ollama:{GUARD}"
    env.settings.safety.guard_version = "llama-guard-3"
    env.server.add_model(GUARD, family="llama")


def gguf_guard(name: str) -> Callable[[Env], None]:
    def arrange(env: Env) -> None:
        env.settings.safety.guard_model = str(guard_gguf(env.guards, name))
        env.settings.safety.guard_version = "llama-guard-2"
    return arrange


def corrupt_audit(env: Env) -> None:
    ollama_guard(env)
    default_audit_path().write_bytes(b"this is not a database " * 100)


def locked_audit(env: Env) -> None:
    ollama_guard(env)
    env.monkeypatch.setattr(audit_module, "BUSY_TIMEOUT_S", 0.2)
    AuditLog()  # it exists; another program now holds its write lock
    other = sqlite3.connect(default_audit_path(), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    env.held.append(other)


def unwritable_audit(env: Env) -> None:
    ollama_guard(env)
    default_audit_path().mkdir()  # a folder where the database file should be


def missing_model(env: Env) -> None:
    env.settings.safety.guard_model = str(env.tmp / "llama-guard-gone.gguf")
    env.settings.safety.guard_version = "llama-guard-2"


def damaged_model(env: Env) -> None:
    path = env.tmp / "llama-guard-damaged.gguf"
    path.write_bytes(b"GGUF" + os.urandom(2000))
    env.settings.safety.guard_model = str(path)
    env.settings.safety.guard_version = "llama-guard-2"


def server_down(env: Env) -> None:
    ollama_guard(env)
    env.server.stop()


def not_pulled(env: Env) -> None:
    env.settings.safety.guard_model = f"ollama:{GUARD}"  # the server does not have it


def server_error(env: Env) -> None:
    ollama_guard(env)
    env.server.fail("/api/generate", 500, "out of memory", times=2)


def server_hangs(env: Env) -> None:
    ollama_guard(env)
    env.server.hang("/api/generate", times=2)


def _wrap_generate(guard: Any, monkeypatch: pytest.MonkeyPatch,
                   sabotage: Callable[[Any, Any], None]) -> None:
    """Every generation of the guard's engine runs ``sabotage(engine, event)`` on its events
    (first with None, before the request)."""
    engine = guard.backend.engine
    real = engine.generate

    def generate(*args: Any, **kwargs: Any) -> Iterator[Any]:
        sabotage(engine, None)
        for event in real(*args, **kwargs):
            sabotage(engine, event)
            yield event

    monkeypatch.setattr(engine, "generate", generate)


def killed_mid_answer(guard: Any, env: Env) -> None:
    """kill -9 of the guard's engine once the first words of its answer ("safe") came."""
    env.monkeypatch.setattr(backends_module, "MAX_ANSWER_TOKENS", 3000)  # still talking

    def kill(engine: Any, event: Any) -> None:
        if event is not None and event.text and engine.pid is not None:
            os.kill(engine.pid, signal.SIGKILL)

    _wrap_generate(guard, env.monkeypatch, kill)


def frozen_mid_check(guard: Any, env: Env) -> None:
    """The guard's engine stops (SIGSTOP) as its answer is asked for: the time limit ends it."""
    def freeze(engine: Any, event: Any) -> None:
        if event is None and engine.pid is not None:
            os.kill(engine.pid, signal.SIGSTOP)

    _wrap_generate(guard, env.monkeypatch, freeze)


def hung_engine(guard: Any, env: Env) -> None:
    """The guard's engine stops answering (no heartbeat for a second): Corral kills it."""
    env.monkeypatch.setattr(engine_module, "READ_TIMEOUT_S", 1.0)
    frozen_mid_check(guard, env)


def limited(arrange: Callable[[Env], None]) -> Callable[[Env], None]:
    """``arrange``, with a guard time limit of one second."""
    def with_limit(env: Env) -> None:
        arrange(env)
        env.settings.safety.timeout_s = 1.0
    return with_limit


@dataclass
class Fault:
    arrange: Callable[[Env], None]
    verdict: str  # what the check says: unavailable, unknown (not understood) or unsafe
    cause: str  # words of the verdict's reason that name the cause
    fix: str = ""  # words of its hint (what to do), for a guard that could not run
    sabotage: Callable[[Any, Env], None] | None = None  # done to the built guard
    audit_broken: bool = False  # the audit log is the cause: the app log has the checks
    built: bool = True  # the guard could be built (else an UnavailableGuard stands in)


FAULTS = {
    "audit log damaged": Fault(corrupt_audit, "unavailable", "is damaged", "Move the file away",
                               audit_broken=True, built=False),
    "audit log locked": Fault(locked_audit, "unavailable", "is locked by another program",
                              "Close the program that holds it", audit_broken=True, built=False),
    "audit log unwritable": Fault(unwritable_audit, "unavailable", "cannot be written",
                                  "Make the file and its folder writable", audit_broken=True,
                                  built=False),
    "guard model missing": Fault(missing_model, "unavailable", "no such model file",
                                 "Choose another guard model", built=False),
    "guard model damaged": Fault(damaged_model, "unavailable", "model file damaged",
                                 "Choose another guard model", built=False),
    "server down": Fault(server_down, "unavailable", "Ollama is not running", "Start it"),
    "server answers 404": Fault(not_pulled, "unavailable", f"has no model '{GUARD}'",
                                f"corral models pull {GUARD}"),
    "server answers 500": Fault(server_error, "unavailable", "(500): out of memory",
                                "Check the Ollama server"),
    "server hangs": Fault(limited(server_hangs), "unavailable", "did not answer within 1 s",
                          "raise the guard's time limit"),
    "guard times out": Fault(limited(gguf_guard("safe")), "unavailable",
                             "the guard did not answer within 1 s",
                             "raise the guard's time limit", sabotage=frozen_mid_check),
    "engine hangs": Fault(gguf_guard("safe"), "unavailable", "stopped answering for 1 s",
                          "Try again", sabotage=hung_engine),
    "engine killed mid-answer": Fault(gguf_guard("safe-forever"), "unavailable",
                                      "engine crashed", "the guard model restarts",
                                      sabotage=killed_mid_answer),
    "empty answer": Fault(gguf_guard("empty"), "unknown", "the guard said nothing"),
    "garbage answer": Fault(gguf_guard("garbage"), "unknown", "it should be 'safe'"),
    "'safe' and more text": Fault(gguf_guard("safe-and-more"), "unknown", "text after 'safe'"),
    "'safe' without end": Fault(gguf_guard("safe-forever"), "unknown", "text after 'safe'"),
    "unknown category": Fault(gguf_guard("unknown-category"), "unsafe",
                              "S42 is not a llama-guard-2 category"),
}


def env_for(ollama_server: Any, guards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            mode: str) -> Env:
    settings = Settings()
    settings.ollama.host = ollama_server.host
    settings.ollama.read_timeout = 10
    settings.engine.n_threads = 1
    s = settings.safety
    s.enabled, s.when_unavailable, s.timeout_s = True, mode, 30.0
    return Env(settings, ollama_server, guards, tmp_path, monkeypatch, [])


def session_for(env: Env, chat_backend: LlamaCppBackend, fault: Fault) -> ChatSession:
    fault.arrange(env)
    guard = guard_from_settings(env.settings)
    assert isinstance(guard, UnavailableGuard if not fault.built else GuardService)
    if fault.sabotage is not None:
        fault.sabotage(guard, env)
    return ChatSession(chat_backend, store=HistoryStore(), guard=guard,
                       params=GenerationParams(max_tokens=4, temperature=0.0))


def assert_says_why(verdict: dict[str, Any], fault: Fault, action: str) -> None:
    assert verdict["verdict"] == fault.verdict != "safe"
    assert verdict["action"] == action
    assert fault.cause in verdict["reason"], verdict["reason"]
    if fault.fix:
        assert fault.fix in verdict["hint"], verdict["hint"]


def assert_logged(fault: Fault, caplog: pytest.LogCaptureFixture, directions: list[str]) -> None:
    if fault.audit_broken:  # the audit log cannot take it: the app's log has every check
        said = [r.getMessage() for r in caplog.records if r.name == "corral.safety"]
        assert sum("guard unavailable" in m for m in said) == len(directions), said
        return
    entries = AuditLog().entries()
    assert [e.direction for e in reversed(entries)] == directions
    assert {e.verdict for e in entries} == {fault.verdict}


@pytest.mark.ollama
@pytest.mark.parametrize("name", list(FAULTS))
def test_a_guard_fault_blocks_the_message_and_says_why(
        name, ollama_server, guards, tmp_path, monkeypatch, caplog, chat_backend) -> None:
    caplog.set_level(logging.WARNING, "corral.safety")
    fault = FAULTS[name]
    env = env_for(ollama_server, guards, tmp_path, monkeypatch, "block")
    session = session_for(env, chat_backend, fault)
    events = list(session.send(QUESTION))
    assert [e.kind for e in events] == ["started", "verdict", "blocked"]
    assert_says_why(events[1].verdict, fault, "block")
    [stored] = session.history()  # the message is kept, not sent: no answer
    assert stored.role == "user" and stored.verdict["action"] == "block"
    assert "It was blocked" in _explained(stored.verdict)
    assert_logged(fault, caplog, ["input"])


@pytest.mark.ollama
@pytest.mark.parametrize("name", list(FAULTS))
def test_a_guard_fault_warns_when_the_settings_say_so(
        name, ollama_server, guards, tmp_path, monkeypatch, caplog, chat_backend) -> None:
    caplog.set_level(logging.WARNING, "corral.safety")
    fault = FAULTS[name]
    env = env_for(ollama_server, guards, tmp_path, monkeypatch, "warn")
    session = session_for(env, chat_backend, fault)
    events = list(session.send(QUESTION))
    verdicts = [e.verdict for e in events if e.kind == "verdict"]
    if fault.verdict == "unsafe":  # an undefined category: the strictest action, always
        assert [e.kind for e in events] == ["started", "verdict", "blocked"]
        assert_says_why(verdicts[0], fault, "block")
        return
    assert [e.kind for e in events][-1] == "finished" and "blocked" not in [e.kind for e in events]
    assert [v["direction"] for v in verdicts] == ["input", "output"]
    for verdict in verdicts:
        assert_says_why(verdict, fault, "warn")
    user, answer = session.history()
    assert answer.content and answer.verdict["action"] == "warn"
    assert "with a warning" in _explained(answer.verdict)
    assert_logged(fault, caplog, ["input", "output"])


def _explained(verdict: dict[str, Any]) -> str:
    from core.safety.verdict import GuardVerdict

    return GuardVerdict.from_dict(verdict).explanation()


# --- sending without the guard --------------------------------------------------------------


@pytest.mark.ollama
@pytest.mark.parametrize("name", ["server down", "audit log damaged"])
def test_the_user_can_send_one_blocked_message_without_the_guard(
        name, ollama_server, guards, tmp_path, monkeypatch, caplog, chat_backend) -> None:
    caplog.set_level(logging.WARNING, "corral.safety")
    fault = FAULTS[name]
    env = env_for(ollama_server, guards, tmp_path, monkeypatch, "block")
    session = session_for(env, chat_backend, fault)
    blocked = list(session.send(QUESTION))[-1].verdict
    reason = blocked["reason"]
    events = list(session.regenerate(unguarded=reason))
    assert [e.kind for e in events if e.kind != "delta"] == ["started", "finished"]
    user, answer = session.history()
    assert answer.content and (user.unguarded, answer.unguarded) == (reason, reason)
    assert user.verdict is None and answer.verdict is None  # not checked, and says so
    said = [r.getMessage() for r in caplog.records if r.name == "corral.safety"]
    assert any("sent without the guard" in m for m in said)
    if fault.audit_broken:
        return  # the audit log cannot be written: the app's log has it (above)
    override = AuditLog().entries()[0]
    assert (override.verdict, override.direction, override.action) == ("skipped", "input",
                                                                        "allow")
    assert override.reason == f"sent without the guard by the user's choice: {reason}"
    assert override.conversation_id == str(session.conversation.id)
    # the next message is guarded again
    assert [e.kind for e in session.send("And rye?")][-1] == "blocked"


# --- the command line ---------------------------------------------------------------------------


def test_corral_chat_blocks_says_why_and_can_send_one_message_without_the_guard(
        tiny_gguf, guards, tmp_path, capsys) -> None:
    from core.cli import main

    settings = Settings()
    s = settings.safety
    s.enabled, s.guard_model, s.guard_version = True, str(tmp_path / "gone.gguf"), "llama-guard-2"
    settings.save()
    argv = ["chat", str(tiny_gguf), "--max-tokens", "4", "--temperature", "0"]
    assert main([*argv, "hello"]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "not sent: Your message was not checked: the guard could not run: no such model " \
           "file" in captured.err and "Choose another guard model" in captured.err
    assert "--without-guard" in captured.err
    assert main([*argv, "--without-guard", "hello"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip()
    store = HistoryStore()
    user, answer = store.messages(store.conversations()[0].id)[-2:]
    assert user.unguarded.startswith("the user chose --without-guard (the guard was "
                                     "unavailable: no such model file")
    assert answer.content == captured.out.strip() and answer.unguarded == user.unguarded
    assert AuditLog().entries()[0].reason.startswith("sent without the guard by the user's")


def test_corral_chat_holds_a_checked_answer_and_withholds_a_blocked_one(
        tiny_gguf, guards, capsys) -> None:
    from core.cli import main

    settings = Settings()
    s = settings.safety
    s.enabled, s.guard_version, s.check_input = True, "llama-guard-2", False
    s.guard_model = str(guard_gguf(guards, "unsafe"))  # every answer: unsafe, S1
    settings.save()
    argv = ["chat", str(tiny_gguf), "--max-tokens", "4", "--temperature", "0", "hello"]
    assert main(argv) == 3
    captured = capsys.readouterr()
    assert captured.out.strip() == ""  # held, then withheld: never printed
    assert "answer withheld: The answer was judged unsafe" in captured.err
    assert "S1 Violent Crimes" in captured.err
    s.guard_model = str(guard_gguf(guards, "safe"))
    settings.save()
    assert main(argv) == 0
    assert capsys.readouterr().out.strip()  # printed once checked
