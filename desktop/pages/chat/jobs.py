"""The Chat page's worker jobs: open a model, run one turn (text sent in batches of ~30 ms), and
count and build the prompt for the context meter and the inspector. No widgets here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from core.chat.backends import BackendInfo, ChatBackend, PreparedPrompt
from core.chat.retrieval import KbRetrieval
from core.chat.session import ChatEvent, ChatSession
from core.config import Settings
from core.errors import CorralError
from desktop.jobs import Job
from desktop.pages.chat.guard import ChatGuard, TurnGuard

BATCH_S = 0.03

#: what a turn tells the page while it runs, as ``(kind, payload, tokens)``:
#: ("delta", text, answer tokens so far), ("held", "", answer tokens so far: an answer held
#: back until the guard has checked it), ("checking", "input"|"output"|"documents", 0),
#: ("status", sentence, 0) and ("event", ChatEvent, 0)
TurnUpdate = tuple[str, str | ChatEvent, int]
#: one turn: ``action(session, drop_oldest)`` gives the events of send, regenerate or resend
TurnAction = Callable[[ChatSession, bool], Iterator[ChatEvent]]


class Batcher:
    """Text deltas of one turn, sent to the GUI thread at most every BATCH_S, and at the
    latest BATCH_S after they came: a model that pauses (or stalls) after a few tokens still
    shows them, since a timer sends what waits while the turn's thread waits for the next."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.parts: list[str] = []
        self.tokens = 0
        self.last = 0.0  # when the last batch went: the first one goes at once
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def add(self, text: str, tokens: int) -> None:
        with self._lock:
            self.parts.append(text)
            self.tokens = tokens
            wait = BATCH_S - (time.monotonic() - self.last)
            if wait <= 0:
                self._send()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Send what is held back (before an event, and before a guard check starts): text,
        or for an answer held until checked, only how many tokens it has."""
        with self._lock:
            self._send()

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.parts:
            text = "".join(self.parts)
            update: TurnUpdate = ("delta" if text else "held", text, self.tokens)
            self.job.partial(update)
            self.parts.clear()
            self.last = time.monotonic()


def open_model_job(job: Job, ref: str, settings: Settings) -> tuple[ChatBackend, BackendInfo]:
    """The chat backend behind ``ref`` and its info (may start the engine child)."""
    from core.chat.open import open_backend

    backend = open_backend(ref, settings)
    return backend, backend.info()


def build_guard_job(job: Job, chat_guard: ChatGuard, settings: Settings) -> object:
    """Build the chat's guard for ``settings`` (it reads the audit log and the model file);
    the page then says on its toolbar what came of it."""
    return chat_guard.current(settings)


def open_retrieval(settings: Settings, kb: str) -> KbRetrieval | None:
    """Retrieval for one turn, or None without a knowledge base (it may load the embedder)."""
    if not kb:
        return None
    from core.chat.retrieval import open_retrieval as open_kb

    return open_kb(kb, settings)


def turn_job(job: Job, session: ChatSession, action: TurnAction, drop_oldest: bool,
             chat_guard: ChatGuard, settings: Settings) -> int | None:
    """Run one turn of ``session`` with the guard ``settings`` ask for (built here if they
    changed): its events go to the page as ``TurnUpdate`` partials; returns the conversation
    id. Stopped (the job cancelled, ``session.cancel`` called) once the turn has begun, it ends
    as the session does: the answer so far is stored, marked stopped or interrupted, and
    checked. Stopped before, it raises Cancelled and nothing is stored."""
    batch = Batcher(job)
    kb = session.kb
    retrieval: KbRetrieval | None = None
    try:
        guard = chat_guard.current(settings)
        session.guard = TurnGuard(guard, job, batch.flush) if guard is not None else None
        if kb:
            status: TurnUpdate = ("status", f"Searching the knowledge base '{kb}' …", 0)
            job.partial(status)
        session.retrieval = retrieval = open_retrieval(settings, kb)
        job.check()  # Stop while the knowledge base opened: nothing is stored or sent yet
        for ev in action(session, drop_oldest):
            if job.cancelled:  # Stop: repeat until the backend is generating and hears it
                session.cancel()
            if ev.kind == "delta":
                batch.add(ev.text, ev.completion_tokens)
                continue
            if ev.kind == "held":
                batch.add("", ev.completion_tokens)
                continue
            batch.flush()
            event: TurnUpdate = ("event", ev, 0)
            job.partial(event)
        return session.conversation.id if session.conversation else None
    finally:  # no timer outlives the turn; the knowledge base's files are let go
        batch.flush()
        if retrieval is not None:
            retrieval.close()


class PromptViews(NamedTuple):
    """What the context meter and the prompt inspector show for the draft."""

    system_tokens: int  # the fixed part: the system prompt and the format's own tokens
    history_tokens: int  # the earlier turns' and the draft's tokens
    exact: bool  # counted by the model's own tokenizer, else estimated from the characters
    length: int | None  # the context window the model really gets
    requested: int  # the context length the user picked (0: the model's default)
    prepared: PreparedPrompt | None  # the exact prompt, when the inspector is open
    problem: str  # why the prompt could not be built (or is not shown)
    kind: str  # the backend kind


EMPTY_DRAFT = "Type a message to see the exact prompt the model will receive."
CHARS_PER_TOKEN = 4  # the estimate where the model's own tokenizer is not at hand


def prompt_views_job(job: Job, session: ChatSession, draft: str, upto: int | None, kind: str,
                     want_prompt: bool) -> PromptViews:
    """Count the fixed part of the prompt (the system prompt in the format's frame, with an
    empty message) and the whole prompt (history before position ``upto`` and the draft);
    build the exact prompt too when ``want_prompt`` and something is typed.

    An empty draft is counted as an empty next message, so the history is counted exactly
    after a turn too."""
    from core.prompts.base import Message

    history = [m for m in session.history() if upto is None or m.position < upto]
    msgs = session.prompt_messages(history, draft if draft.strip() else "")
    requested = session.params.context_length
    length = session.backend.use_context(requested)
    total = session.backend.count(msgs, session.format, "defuse")
    system_msgs = [Message("system", session.system)] if session.system.strip() else []
    fixed = None
    if total is not None:
        fixed = session.backend.count([*system_msgs, Message("user", "")], session.format,
                                      "defuse")
    exact = total is not None and fixed is not None
    if total is None or fixed is None:  # e.g. no tokenizer at hand: estimate
        fixed = len(session.system.strip()) // CHARS_PER_TOKEN
        chars = sum(len(m.content) for m in msgs if m.role != "system")
        total = fixed + chars // CHARS_PER_TOKEN
    prepared = None
    problem = "" if draft.strip() else EMPTY_DRAFT
    if want_prompt and draft.strip():
        job.check()  # superseded while counting: building the prompt is wasted work
        try:
            prepared = session.backend.prepare(msgs, session.format, session.tags)
        except CorralError as exc:  # e.g. a refused special tag: shown in the inspector
            problem = exc.sentence()
    return PromptViews(fixed, max(total - fixed, 0), exact, length, requested, prepared,
                       problem, kind)
