"""Chat completions through Chat's own turn runner (core.chat.session): the same backend, prompt
format, guard, retrieval and history as the window and `corral chat`.

Each request becomes a ``ChatPlan`` (checked before any work: model reference, roles) and runs
in a ``ChatRun`` thread that waits its turn on the model's fair queue, then streams the turn's
events to a sink. A run whose client left is cancelled: it leaves the queue, or its answer
stops at once and the engine is free for the next request.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.chat.backends import ChatBackend
from core.chat.params import GenerationParams
from core.chat.session import ChatSession
from core.chat.store import HistoryStore
from core.config import Settings
from core.errors import CorralError
from core.serve.fair import FairQueues
from core.serve.shapes import MAX_COMPLETION_TOKENS, ApiError, ChatRequest, MessageIn

log = logging.getLogger("corral.serve")

#: what a run hands its sink: ("event", ChatEvent), ("error", exception) or ("end", None)
Item = tuple[str, Any]
Sink = Callable[[Item], None]


def library_ref(text: str, settings: Settings) -> str:
    """The canonical reference for a request's ``model`` field: library (imported) models,
    ``store:`` and ``ollama:`` references only, never a path (ApiError 400); ModelNotFound for
    a name that names nothing."""
    from core.models.refs import parse_ref, resolve

    ref = parse_ref(text)
    if ref.kind == "gguf" and ref.path is not None:
        raise ApiError(400, "the API serves only library models, store: and ollama: "
                            "references, never a file path", param="model",
                       code="model_not_allowed")
    return resolve(ref, settings).ref


def guard_settings_key(settings: Settings) -> str:
    """What a guard is made of (Safety, Ollama and engine settings): a new key, a new guard."""
    return repr((dataclasses.astuple(settings.safety), dataclasses.astuple(settings.ollama),
                 dataclasses.astuple(settings.engine)))


def _merged(messages: list[MessageIn]) -> tuple[str, list[tuple[str, str]]]:
    """(the system prompt, the user/assistant turns with neighbours of one role joined)."""
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for m in messages:
        if m.role in ("tool", "function"):
            raise ApiError(400, f"messages with role '{m.role}' are not supported",
                           param="messages", code="unsupported_role")
        text = m.text()
        if m.role in ("system", "developer"):
            system.append(text)
        elif turns and turns[-1][0] == m.role:
            turns[-1] = (m.role, f"{turns[-1][1]}\n\n{text}")
        else:
            turns.append((m.role, text))
    if not turns or turns[-1][0] != "user":
        raise ApiError(400, "the last message must be the user's", param="messages")
    return "\n\n".join(s for s in system if s.strip()), turns


@dataclass
class ChatPlan:
    """One checked request: what to run, and with what."""

    ref: str
    backend: ChatBackend
    params: GenerationParams
    system: str
    history: list[tuple[str, str]]
    question: str
    kb: str = ""
    stream: bool = False
    include_usage: bool = False
    model: str = ""  #: the model field as the client wrote it
    hold: bool = False  #: answers wait for the guard's output check before they are sent


class ChatService:
    """Backends (one per model, reused), the guard, the history store and the fair queues."""

    def __init__(self, settings: Settings, *, history: bool | None = None) -> None:
        self.settings = settings
        keep = settings.serve.history if history is None else history
        self.history = keep
        self.store = HistoryStore() if keep else HistoryStore(":memory:")
        self.queues = FairQueues()
        self._lock = threading.Lock()
        self._backends: dict[str, ChatBackend] = {}
        self._guard: Any = None
        self._guard_key = ""
        self._runs: set[ChatRun] = set()

    # --- what a request needs ------------------------------------------------------------

    def backend(self, ref: str) -> ChatBackend:
        """The model's backend, reused while the engine and Ollama settings stay the same."""
        s = self.settings
        key = repr((ref, dataclasses.astuple(s.engine), dataclasses.astuple(s.ollama)))
        with self._lock:
            backend = self._backends.get(key)
        if backend is None:
            from core.chat.open import open_backend

            backend = open_backend(ref, s)
            with self._lock:
                backend = self._backends.setdefault(key, backend)
        return backend

    def guard(self) -> Any:
        """The chat guard from the Safety settings (None when off), made again when they
        change; one that cannot be built stands in as an UnavailableGuard, so turns block or
        warn as the policy says."""
        key = guard_settings_key(self.settings)
        with self._lock:
            if self._guard_key != key:
                from core.safety.guard import guard_from_settings

                self._guard = guard_from_settings(self.settings)
                self._guard_key = key
            return self._guard

    def plan(self, req: ChatRequest) -> ChatPlan:
        """Check a request and bind it to its backend (reads model headers: off the loop)."""
        req.check()
        system, turns = _merged(req.messages)
        ref = library_ref(req.model, self.settings)
        chat = self.settings.chat
        params = GenerationParams.from_settings(chat)
        if req.temperature is not None:
            params.temperature = float(req.temperature)
        if req.top_p is not None:
            params.top_p = float(req.top_p)
        params.max_tokens = min(req.limit() or chat.max_tokens, MAX_COMPLETION_TOKENS)
        params.seed = req.seed
        params.stop = req.stops()
        params.validate()
        from core.safety.verdict import holds_answers

        options = req.stream_options
        hold = self.guard() is not None and holds_answers(self.settings.safety)
        return ChatPlan(ref, self.backend(ref), params, system or chat.system_prompt,
                        turns[:-1], turns[-1][1], kb=(req.corral.kb or "") if req.corral else "",
                        stream=req.stream, include_usage=bool(options and options.include_usage),
                        model=req.model, hold=hold)

    def session(self, plan: ChatPlan, retrieval: Any) -> ChatSession:
        settings = self.settings
        guard = self.guard()
        conversation = None
        if plan.history:
            conversation = self.store.create_conversation(
                title=" ".join(plan.question.split())[:60], model=plan.ref, system=plan.system,
                params=plan.params.to_dict(), kb=plan.kb)
            for role, text in plan.history:
                self.store.add_message(conversation.id, role, text)
        return ChatSession(
            plan.backend, store=self.store, conversation=conversation, model_ref=plan.ref,
            fmt=settings.chat.prompt_format or "auto", system=plan.system, params=plan.params,
            tags="defuse" if settings.chat.special_tags == "defuse" else "refuse",
            guard=guard, retrieval=retrieval, kb=plan.kb,
            check_documents=bool(settings.safety.check_documents),
            hold=plan.hold)

    # --- runs ----------------------------------------------------------------------------

    def start(self, plan: ChatPlan, sink: Sink) -> ChatRun:
        run = ChatRun(self, plan, sink)
        with self._lock:
            self._runs.add(run)
        run.start()
        return run

    def finished(self, run: ChatRun) -> None:
        with self._lock:
            self._runs.discard(run)
        conv = run.conversation_id
        if conv is not None and not self.history:
            try:
                self.store.delete_conversation(conv)
            except CorralError:
                log.debug("could not forget conversation %s", conv, exc_info=True)

    def close(self) -> None:
        """Cancel every run (the server stops)."""
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            run.cancel()
        for run in runs:
            run.join(5.0)


class ChatRun:
    """One request's turn, in its own thread."""

    def __init__(self, service: ChatService, plan: ChatPlan, sink: Sink) -> None:
        self.service = service
        self.plan = plan
        self.sink = sink
        self.conversation_id: int | None = None
        self._state = threading.Lock()
        self._cancelled = False
        self._holding = False
        self._thread = threading.Thread(target=self._work, name="corral-serve-chat",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """The client left: leave the queue, or stop the answer now (the engine is freed)."""
        with self._state:  # under the lock: the turn cannot pass to the next request meanwhile
            self._cancelled = True
            if self._holding:
                self.plan.backend.cancel()  # only this run's request: it holds the model's turn

    def _work(self) -> None:
        retrieval = None
        try:
            if self.plan.kb:
                from core.chat.retrieval import open_retrieval

                retrieval = open_retrieval(self.plan.kb, self.service.settings)
            queue = self.service.queues(self.plan.ref)
            queue.acquire(lambda: self._cancelled)
            try:
                with self._state:
                    self._holding = not self._cancelled
                if self._holding:
                    self._turn(retrieval)
            finally:
                with self._state:
                    self._holding = False
                queue.release()
        except BaseException as exc:  # the request's answer says it; the server goes on
            self.sink(("error", exc))
        finally:
            if retrieval is not None:
                retrieval.close()
            self.service.finished(self)
            self.sink(("end", None))

    def _turn(self, retrieval: Any) -> None:
        session = self.service.session(self.plan, retrieval)
        if session.conversation is not None:
            self.conversation_id = session.conversation.id
        events = session.send(self.plan.question)
        try:
            for ev in events:
                if session.conversation is not None:
                    self.conversation_id = session.conversation.id
                self.sink(("event", ev))
                if self._cancelled:
                    break  # closing the turn stops the engine's stream
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

