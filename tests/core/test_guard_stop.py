"""Stop during a guard check, through the chat session (core): the guard does not end its check
by itself (the loopback Ollama server holds the request or hangs after "safe", or the engine
child is frozen with SIGSTOP before or during its answer), the time limit is far away, and the
user stops the turn (``session.cancel()`` from another thread, as the Chat page's Stop does).

Stopped, the check of the message ends the turn before anything is stored or sent (CheckStopped,
a Cancelled); that of the answer gives a verdict that says so, and the setting for an unavailable
guard decides (block or warn). Nothing reads as safe. The order of events and the reasons show
that the check was stopped, not timed out; no assertion is about time."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import core.safety.guard_backends as backends_module
from core.chat.session import ChatSession
from core.chat.store import HistoryStore
from core.errors import Cancelled
from core.safety.audit import AuditLog
from core.safety.guard import STOPPED, CheckStopped, was_stopped
from tests.core.test_guard_faults import (
    QUESTION,
    Env,
    Fault,
    _explained,
    _wrap_generate,
    env_for,
    gguf_guard,
    ollama_guard,
    session_for,
)

pytestmark = pytest.mark.usefixtures("close_engines")  # tests/core/conftest.py


@dataclass
class Stall:
    arrange: Callable[[Env], None]
    stall: Callable[[Any, Env, threading.Event], None] | None = None  # done to the built guard
    requests: int = 0  # Ollama: the check is running once this many /api/generate came


def held_by_ollama(*first: list[str], chunks: tuple[str, ...] = (), hold: bool = True
                   ) -> Callable[[Env], None]:
    """The guard through the loopback Ollama: ``first`` answers, then a request it holds (no
    headers until the client hangs up), or that streams ``chunks`` and then hangs."""
    def arrange(env: Env) -> None:
        ollama_guard(env)
        for answer in first:
            env.server.script_generate(answer)
        env.server.script_generate(list(chunks), hold=hold, hang=not hold)
    return arrange


FROZEN: list[int] = []  # engine children a test stopped with SIGSTOP


@pytest.fixture(autouse=True)
def thaw() -> Iterator[None]:
    """A child frozen by a test and left idle (the Stop came before its request went out)
    would hang the next test's first request on the same pooled engine: kill it."""
    yield
    while FROZEN:
        try:
            os.kill(FROZEN.pop(), signal.SIGKILL)
        except ProcessLookupError:
            pass


def frozen_engine(*, mid_answer: bool) -> Callable[[Any, Env, threading.Event], None]:
    """SIGSTOP of the guard's engine child as the check asks for its answer, or once its first
    words came (it answers " safe safe ..." and would go on for 3000 tokens)."""
    def stall(guard: Any, env: Env, stalled: threading.Event) -> None:
        env.monkeypatch.setattr(backends_module, "MAX_ANSWER_TOKENS", 3000)

        def freeze(engine: Any, event: Any) -> None:
            now = bool(event is not None and event.text) if mid_answer else event is None
            if now and not stalled.is_set() and engine.pid is not None:
                os.kill(engine.pid, signal.SIGSTOP)
                FROZEN.append(engine.pid)
                stalled.set()

        _wrap_generate(guard, env.monkeypatch, freeze)
    return stall


STALLS = {
    "input, Ollama holds the request": Stall(held_by_ollama(), requests=1),
    "input, engine frozen": Stall(gguf_guard("safe-forever"), frozen_engine(mid_answer=False)),
    "output, Ollama said 'safe' and hangs": Stall(held_by_ollama(["safe"], chunks=("safe",),
                                                                 hold=False), requests=2),
    "output, engine frozen mid-answer": Stall(gguf_guard("safe-forever"),
                                              frozen_engine(mid_answer=True)),
}


def stop_during_the_check(session: ChatSession, running: Callable[[], bool]
                          ) -> tuple[list[Any], list[BaseException]]:
    """Send in a worker thread; once the check runs, Stop (``session.cancel()``) as the Chat
    page's Stop does; the events and what the turn raised."""
    events: list[Any] = []
    raised: list[BaseException] = []

    def turn() -> None:
        try:
            events.extend(session.send(QUESTION))
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=turn, daemon=True)
    worker.start()
    wait_for(running)
    session.cancel()
    worker.join(60)
    assert not worker.is_alive(), "Stop did not end the turn"
    return events, raised


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the check never started"
        time.sleep(0.01)


@pytest.mark.ollama
@pytest.mark.parametrize("mode", ["block", "warn"])
@pytest.mark.parametrize("name", list(STALLS))
def test_stop_stops_a_running_check_and_nothing_reads_as_safe(
        name, mode, ollama_server, guards, tmp_path, monkeypatch, chat_backend) -> None:
    stall = STALLS[name]
    direction = name.split(",")[0]
    env = env_for(ollama_server, guards, tmp_path, monkeypatch, mode)
    env.settings.safety.check_input = direction == "input" or stall.requests > 0
    stalled = threading.Event()
    session = session_for(env, chat_backend, Fault(stall.arrange, "unavailable", ""))
    if stall.stall is not None:
        stall.stall(session.guard, env, stalled)

    def running() -> bool:
        if stall.requests:
            return len(ollama_server.requests_to("/api/generate")) >= stall.requests
        return stalled.is_set()

    events, raised = stop_during_the_check(session, running)
    entries = AuditLog().entries()  # newest first
    assert entries[0].direction == direction and entries[0].verdict == "unavailable"
    assert entries[0].reason.endswith(STOPPED)  # stopped: not timed out, not a crash
    if direction == "input":  # the turn ends: nothing stored, nothing sent to the chat model
        assert [type(e) for e in raised] == [CheckStopped] and isinstance(raised[0], Cancelled)
        assert events == [] and HistoryStore().conversations() == []
        assert len(entries) == 1
        if "holds" in name:
            assert ollama_server.hung_up.wait(30)  # the server saw the check go away
        return
    assert raised == []
    kinds = [e.kind for e in events if e.kind != "delta"]
    assert kinds[-2:] == ["verdict", "finished"] and "blocked" not in kinds
    verdict = events[-2].verdict
    assert events[-2].direction == "output" and was_stopped(verdict)
    assert verdict["action"] == mode  # as the setting says for a guard that cannot judge
    answer = session.history()[-1]
    assert answer.content and answer.verdict == verdict  # kept, and never as checked
    said = _explained(verdict)
    assert "was not checked" in said and STOPPED in said
    assert "Regenerate the answer to have it checked." in said
    assert [e.direction for e in entries] == ["output"] + (["input"] if stall.requests else [])
