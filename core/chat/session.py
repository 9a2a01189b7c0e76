"""One conversation with one model: send, regenerate, edit-and-resend, stop.

Each turn is a generator of ``ChatEvent``s (started, delta or held, verdict, blocked, finished)
that a CLI prints or a GUI worker forwards. With a guard the order is: the user's message is
checked first, then documents are retrieved and their passages checked, then the prompt is
built and the answer streams - shown as it comes ("delta"), or held back until the guard has
checked it ("held" events carry only the token count). An answer that stops early (failed,
crashed, cancelled) is checked too, before the turn ends. The history store is written as the
turn runs: the user message once it is checked, then the answer row when streaming starts,
updated with partial text every half second, so a crash loses at most that half second and a
dead backend leaves the partial answer marked interrupted. Until the guard has judged it, an
answer row carries a verdict that blocks it (fail closed, also across a crash).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.chat.backends import ChatBackend, PreparedPrompt
from core.chat.hooks import Guard, Retrieval, cite_retrieved, grounded_question
from core.chat.params import GenerationParams
from core.chat.store import ChatMessage, Conversation, HistoryStore
from core.errors import ContextOverflow, CorralError, PromptFormatError
from core.prompts.base import Message, TagPolicy

SAVE_EVERY_S = 0.5


#: the verdict an answer row carries until the guard has judged it
UNCHECKED = {"verdict": "unavailable", "action": "block", "direction": "output",
             "reason": "the guard could not run: its check of this answer did not finish"}


@dataclass
class ChatEvent:
    kind: str  #: started | delta | held | verdict | blocked | finished
    text: str = ""
    message: ChatMessage | None = None
    user_message: ChatMessage | None = None
    prompt: PreparedPrompt | None = None
    verdict: dict[str, Any] | None = None
    direction: str = ""  #: verdict events: 'input' or 'output'
    completion_tokens: int = 0
    dropped_turns: int = 0
    citations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ContextCheck:
    prompt_tokens: int | None
    max_tokens: int
    context_length: int | None
    estimated: bool = False  #: the count is an estimate (with a margin), not the model's own

    @property
    def fits(self) -> bool:
        if self.prompt_tokens is None or not self.context_length:
            return True
        return self.prompt_tokens + self.max_tokens <= self.context_length


class ChatSession:
    """A conversation bound to a backend, a prompt format and generation parameters."""

    def __init__(
        self,
        backend: ChatBackend,
        *,
        store: HistoryStore,
        conversation: Conversation | None = None,
        model_ref: str = "",
        fmt: str = "auto",
        system: str = "",
        params: GenerationParams | None = None,
        tags: TagPolicy = "refuse",
        guard: Guard | None = None,
        retrieval: Retrieval | None = None,
        kb: str = "",
        check_documents: bool = False,
        hold: bool = False,
    ) -> None:
        self.backend = backend
        self.store = store
        self.conversation = conversation
        self.model_ref = model_ref
        self.requested_format = fmt or "auto"
        self.system = system
        self.params = (params or GenerationParams()).validate()
        self.tags: TagPolicy = tags
        self.guard = guard
        self.retrieval = retrieval
        self.kb = kb
        #: retrieved passages go through the guard's check_documents before the prompt
        self.check_documents = check_documents
        #: with a guard, answers are held back until it has checked them ("held" events)
        self.hold = hold
        self._format: str | None = None

    # --- what goes into the prompt ---------------------------------------------------

    @property
    def format(self) -> str:
        if self._format is None:
            from core.prompts.formats import normalise_format

            if self.requested_format == "auto":
                self._format = self.backend.info().format
            else:
                self._format = normalise_format(self.requested_format)
        return self._format

    def retrieve(self, question: str, guard: Guard | None = None
                 ) -> tuple[list[Any], list[dict[str, Any]]]:
        """What retrieval gives this question, nothing generated: (the hits that enter the
        prompt, their citations numbered [1], [2] ... followed by records of the passages
        ``guard`` leaves out when ``check_documents``). Both empty without retrieval."""
        if self.retrieval is None:
            return [], []
        cid = str(self.conversation.id) if self.conversation is not None else ""
        return cite_retrieved(self.retrieval(question), guard,
                              check_documents=self.check_documents, conversation_id=cid)

    def history(self) -> list[ChatMessage]:
        return self.store.messages(self.conversation.id) if self.conversation else []

    def prompt_messages(self, history: Sequence[ChatMessage], question: str | None = None
                        ) -> list[Message]:
        """System + answered turns (+ the new question): blocked or unanswered turns are left
        out so the roles alternate."""
        out: list[Message] = [Message("system", self.system)] if self.system.strip() else []
        pending: ChatMessage | None = None
        for msg in history:
            if msg.role == "user":
                pending = msg
            elif msg.role == "assistant" and pending is not None:
                blocked = (msg.verdict or {}).get("action") == "block"
                if msg.content.strip() and not blocked:
                    out += [Message("user", pending.content), Message("assistant", msg.content)]
                pending = None
        if question is not None:
            out.append(Message("user", question))
        elif pending is not None:
            out.append(Message("user", pending.content))
        return out

    def check_context(self, messages: Sequence[Message], *, length: int | None = None
                      ) -> ContextCheck:
        """Whether ``messages`` and the answer fit the context. The chosen length is applied
        first (the engine reopens with it) unless ``length`` says it already was."""
        if length is None:
            length = self.backend.use_context(self.params.context_length)
        count = self.backend.count(messages, self.format, self.tags)
        estimated = not self.backend.info().exact_counts
        return ContextCheck(count, self.params.max_tokens, length, estimated)

    def fit_context(self, messages: list[Message], drop_oldest: bool) -> tuple[list[Message], int]:
        check = self.check_context(messages)
        dropped = 0
        while not check.fits:
            first = 1 if messages and messages[0].role == "system" else 0
            if not drop_oldest or len(messages) - first < 3:
                raise ContextOverflow(
                    f"the conversation needs {'about ' if check.estimated else ''}"
                    f"{check.prompt_tokens} tokens plus up to "
                    f"{check.max_tokens} for the answer, but the model's context holds "
                    f"{check.context_length}",
                    needed=(check.prompt_tokens or 0) + check.max_tokens,
                    available=check.context_length or 0,
                )
            del messages[first : first + 2]
            dropped += 1
            check = self.check_context(messages, length=check.context_length)
        return messages, dropped

    # --- turns -----------------------------------------------------------------------

    def send(self, text: str, *, drop_oldest: bool = False, unguarded: str = ""
             ) -> Iterator[ChatEvent]:
        """Send ``text``. ``unguarded``: the user chose to send this one turn without the
        guard (it says why the guard was unavailable); the choice is stored and audited."""
        if not text.strip():
            raise PromptFormatError("the message is empty: type something to send")
        history = self.history()
        return self._turn(history, text, drop_oldest=drop_oldest, unguarded=unguarded)

    def regenerate(self, *, drop_oldest: bool = False, unguarded: str = ""
                   ) -> Iterator[ChatEvent]:
        """Answer the last user message again (also Retry for an interrupted answer, and the
        answer to a message the guard blocked, sent now ``unguarded``)."""
        history = self.history()
        cut: int | None = None
        while history and history[-1].role == "assistant":
            cut = history.pop().position
        if not history:
            raise PromptFormatError("there is no message to answer yet")
        return self._turn(history, None, drop_oldest=drop_oldest, truncate_at=cut,
                          unguarded=unguarded)

    def edit_and_resend(self, message_id: int, text: str, *, drop_oldest: bool = False
                        ) -> Iterator[ChatEvent]:
        if not text.strip():
            raise PromptFormatError("the message is empty: type something to send")
        msg = self.store.message(message_id)
        if self.conversation is None or msg.conversation_id != self.conversation.id:
            raise CorralError("that message belongs to another conversation")
        if msg.role != "user":
            raise PromptFormatError("only your own messages can be edited and sent again")
        history = [m for m in self.history() if m.position < msg.position]
        return self._turn(history, text, drop_oldest=drop_oldest, truncate_at=msg.position)

    def cancel(self) -> None:
        """Stop what runs now, from any thread: the answer (it keeps the text that came), or
        the guard's check (a guard with ``cancel()``). A stopped check never passes: stopped,
        the check of the message (or of passages) ends the turn with Cancelled before anything
        is stored or sent; that of the answer gives a verdict that blocks or warns as the
        settings say for a guard that cannot judge. A check that starts after the cancel (that
        of an answer stopped mid-stream) runs."""
        # The guard first: once the stream is cut, the worker may start the check of the partial
        # answer at once, and that check must not be stopped by this same Stop.
        stop = getattr(self.guard, "cancel", None)
        if callable(stop):
            stop()
        self.backend.cancel()

    def _ensure_conversation(self, title: str) -> Conversation:
        if self.conversation is None:
            self.conversation = self.store.create_conversation(
                title=" ".join(title.split())[:60], model=self.model_ref, format=self.format,
                system=self.system, params=self.params.to_dict(), kb=self.kb)
        else:
            self.conversation = self.store.update_conversation(
                self.conversation.id, model=self.model_ref, format=self.format,
                system=self.system, params=self.params.to_dict(), kb=self.kb)
        return self.conversation

    def _turn(self, history: list[ChatMessage], question: str | None, *, drop_oldest: bool,
              truncate_at: int | None = None, unguarded: str = "") -> Iterator[ChatEvent]:
        # What can fail cheaply fails before anything is stored, checked or sent: the prompt
        # without documents must pass the tag policy and fit.
        turn = _Turn(history, question, question if question is not None
                     else self._pending_question(history), drop_oldest, truncate_at, unguarded)
        messages, turn.dropped = self.fit_context(self.prompt_messages(history, question),
                                                  drop_oldest)
        turn.prompt = self.backend.prepare(messages, self.format, self.tags)
        return self._run(turn)

    def _pending_question(self, history: list[ChatMessage]) -> str:
        if not history or history[-1].role != "user":
            raise PromptFormatError("there is no message to answer yet")
        return history[-1].content

    def _ground(self, turn: _Turn, guard: Guard | None) -> None:
        """Retrieval (its passages checked by ``guard``) and the prompt with what it found."""
        hits, turn.citations = self.retrieve(turn.asked, guard)
        if hits:
            messages = self.prompt_messages(turn.history, turn.question)
            messages[-1] = Message("user", grounded_question(turn.asked, hits))
            messages, turn.dropped = self.fit_context(messages, turn.drop_oldest)
            turn.prompt = self.backend.prepare(messages, self.format, self.tags)

    def _run(self, turn: _Turn) -> Iterator[ChatEvent]:
        created = self.conversation is None
        conv = self._ensure_conversation(turn.asked)
        cid = str(conv.id)
        guard = None if turn.unguarded else self.guard
        plain = [m.to_dict() for m in self.prompt_messages(turn.history, turn.question)
                 if m.role != "system"]
        try:  # nothing of the turn is stored until the input check and the prompt are done
            checked = guard.check_input(plain, conversation_id=cid) if guard else None
            verdict = checked.to_dict() if checked is not None else None
            blocked = (verdict or {}).get("action") == "block"
            if not blocked:
                self._ground(turn, guard)
        except BaseException:
            if created:
                self.store.delete_conversation(conv.id)
                self.conversation = None
            raise
        if turn.truncate_at is not None:
            self.store.delete_messages_from(conv.id, turn.truncate_at)
        if turn.question is not None:
            user = self.store.add_message(conv.id, "user", turn.question, verdict=verdict,
                                          unguarded=turn.unguarded)
        else:
            user = turn.history[-1]
            self.store.update_message(user.id, verdict=verdict, unguarded=turn.unguarded)
            user = self.store.message(user.id)
        yield ChatEvent("started", user_message=user, prompt=turn.prompt,
                        dropped_turns=turn.dropped, citations=turn.citations)
        if verdict is not None:
            yield ChatEvent("verdict", message=user, verdict=verdict, direction="input")
            if blocked:
                yield ChatEvent("blocked", message=user, verdict=verdict)
                return
        if turn.unguarded and self.guard is not None:
            record = getattr(self.guard, "record_override", None)
            if record is not None:
                record(turn.unguarded, cid)
        checks_answer = guard is not None and getattr(guard, "check_outputs", True)
        answer = self.store.add_message(
            conv.id, "assistant", "", model=self.model_ref, format=self.format,
            params=self.params.to_dict(), streaming=1, unguarded=turn.unguarded,
            verdict=UNCHECKED if checks_answer else None,
            citations=turn.citations if self.retrieval is not None else None)  # []: none
        yield from self._stream(answer, turn.prompt, plain, conv.id, guard)

    def _stream(self, answer: ChatMessage, prompt: PreparedPrompt | None,
                plain: list[dict[str, str]], conversation_id: int, guard: Guard | None
                ) -> Iterator[ChatEvent]:
        assert prompt is not None
        hold = self.hold and guard is not None
        parts: list[str] = []
        last_save = time.monotonic()
        finished = False
        try:
            for ev in self.backend.stream(prompt, self.params):
                if ev.text:
                    parts.append(ev.text)
                    yield ChatEvent("held" if hold else "delta", text="" if hold else ev.text,
                                    message=answer, completion_tokens=ev.completion_tokens or 0)
                    now = time.monotonic()
                    if now - last_save >= SAVE_EVERY_S:
                        self.store.update_message(answer.id, content="".join(parts))
                        last_save = now
                if ev.done:
                    finished = True
                    reason = ev.finish_reason or "stop"
                    self.store.update_message(
                        answer.id, content="".join(parts), streaming=0,
                        finish_reason=reason, prompt_tokens=ev.prompt_tokens or prompt.token_count,
                        completion_tokens=ev.completion_tokens, first_token_s=ev.first_token_s,
                        total_s=ev.total_s, tokens_per_s=ev.tokens_per_s,
                        warning=ev.warning or "")
                    break
        except BaseException as exc:
            error = exc.sentence() if isinstance(exc, CorralError) else (
                "the answer was abandoned" if isinstance(exc, GeneratorExit)
                else f"{type(exc).__name__}: {exc}")
            self.store.update_message(answer.id, content="".join(parts), streaming=0,
                                      interrupted=1, error=error, finish_reason="interrupted")
            # The partial answer is checked before the turn ends; an abandoned turn (the
            # generator closed) keeps the blocking UNCHECKED verdict: no slow work there.
            if guard is not None and not isinstance(exc, GeneratorExit):
                yield from self._check_answer(guard, answer.id, plain, conversation_id)
            raise
        if not finished:
            self.store.update_message(answer.id, content="".join(parts), streaming=0,
                                      interrupted=1, finish_reason="interrupted",
                                      error="the backend stopped without finishing the answer")
        if guard is not None:
            yield from self._check_answer(guard, answer.id, plain, conversation_id)
        yield ChatEvent("finished", message=self.store.message(answer.id))

    def _check_answer(self, guard: Guard, answer_id: int, plain: list[dict[str, str]],
                      conversation_id: int) -> Iterator[ChatEvent]:
        """The output check of the answer as stored (whole or partial); an empty answer has
        nothing to check."""
        final = self.store.message(answer_id)
        checked = None
        if final.content.strip():
            checked = guard.check_output(
                [*plain, {"role": "assistant", "content": final.content}],
                conversation_id=str(conversation_id))
        self.store.update_message(answer_id,
                                  verdict=checked.to_dict() if checked is not None else None)
        if checked is not None:
            final = self.store.message(answer_id)
            yield ChatEvent("verdict", message=final, verdict=final.verdict, direction="output")


@dataclass
class _Turn:
    """What one turn knows as it runs: the history before it, the new question (None: answer
    the pending one), what is asked, and the prompt once built."""

    history: list[ChatMessage]
    question: str | None
    asked: str
    drop_oldest: bool
    truncate_at: int | None = None
    unguarded: str = ""
    prompt: PreparedPrompt | None = None
    dropped: int = 0
    citations: list[dict[str, Any]] = field(default_factory=list)


def open_session(backend: ChatBackend, store: HistoryStore, conversation_id: int,
                 **kwargs: Any) -> ChatSession:
    """A session continuing a stored conversation with its stored settings."""
    conv = store.conversation(conversation_id)
    params = GenerationParams.from_dict(conv.params)
    kwargs.setdefault("fmt", conv.format or "auto")
    kwargs.setdefault("system", conv.system)
    kwargs.setdefault("params", params)
    kwargs.setdefault("model_ref", conv.model)
    kwargs.setdefault("kb", conv.kb)
    return ChatSession(backend, store=store, conversation=conv, **kwargs)
