"""The chat's safety guard: checks the user's message, the answer and retrieved passages with a
Llama Guard model (through Ollama or the llama.cpp engine child) and returns GuardVerdicts that
the chat flow, the CLI and the audit log use.

It fails closed. A guard that cannot be built (a damaged, locked or read-only audit log, a
missing or damaged model file, an unknown version) is an UnavailableGuard, and a check that
cannot run (server down, 404, 500, no answer in time, the engine killed mid-answer) or whose
record cannot be written gives an "unavailable" verdict that names the cause and the fix; the
user's setting then blocks (the default) or warns. Nothing of that kind ever reads as safe.

A check can be stopped (the chat's Stop): its ``CheckCancel``, or ``GuardBase.cancel()`` for
every check in flight. A stopped check is recorded as "unavailable" with a reason that says the
user stopped it (``was_stopped``). Stopped, the check of the user's message or of passages
raises CheckStopped (a Cancelled: the turn ends, nothing is sent); that of an answer gives the
verdict, and the setting for an unavailable guard decides (block or warn): an answer whose
check was stopped never reads as checked.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from core.errors import (
    BackendError,
    BackendTimeout,
    CheckStopped,
    CorralError,
    EngineCrashed,
    EngineHung,
    GuardTimeout,
    ModelFileDamaged,
    ModelNotFound,
    UnsafeTemplate,
)
from core.prompts.guard import conversation_turns, guard_version, render_guard
from core.safety.guard_backends import (
    MAX_ANSWER_TOKENS,
    CheckCancel,
    EngineGuardBackend,
    GuardAnswer,
    GuardBackend,
    OllamaGuardBackend,
)
from core.safety.verdict import COULD_NOT_RUN, Direction, GuardVerdict, stricter

if TYPE_CHECKING:
    from core.config import Settings
    from core.safety.audit import AuditLog

__all__ = ["MAX_ANSWER_TOKENS", "STOPPED", "CheckCancel", "CheckStopped", "GuardAnswer",
           "GuardBackend", "GuardBase", "GuardService", "GuardTimeout", "UnavailableGuard",
           "failure", "guard_from_settings", "was_stopped"]

log = logging.getLogger("corral.safety")

CHOOSE_ANOTHER = "Choose another guard model on the Safety page."
#: the cause a stopped check's verdict gives (after "the guard could not run: ")
STOPPED = "you stopped the check before the guard answered"
_AGAIN = {"input": "Send the message again to have it checked.",
          "output": "Regenerate the answer to have it checked.",
          "document": "Send again to have the passages checked."}


_STOPPED_REASON = f"{COULD_NOT_RUN}: {STOPPED}"


def was_stopped(verdict: Mapping[str, object] | None) -> bool:
    """The verdict (a dict) of a check the user stopped (not a failure of the guard)."""
    v = verdict or {}
    return v.get("verdict") == "unavailable" and v.get("reason") == _STOPPED_REASON


def _unless_stopped(verdict: GuardVerdict) -> GuardVerdict:
    """A stopped check of the user's message or of passages stops the turn (CheckStopped):
    nothing is sent, whatever the setting for an unavailable guard would let through."""
    if verdict.verdict == "unavailable" and verdict.reason == _STOPPED_REASON:
        raise CheckStopped()
    return verdict


def failure(exc: BaseException) -> tuple[str, str]:
    """(what happened, what to do) for an error that kept the guard from answering."""
    if not isinstance(exc, CorralError):
        return f"{type(exc).__name__}: {exc}", "Send again; if it keeps failing, check the log."
    hint = exc.hint
    if isinstance(exc, BackendTimeout):
        hint = ("Check that the Ollama server is working, or raise the guard's time limit on "
                "the Safety page.")
    elif isinstance(exc, EngineCrashed) and not isinstance(exc, EngineHung):
        hint = "Send again: the guard model restarts. If it keeps crashing, " + CHOOSE_ANOTHER
    elif isinstance(exc, (ModelNotFound, ModelFileDamaged, UnsafeTemplate)) and not hint:
        hint = CHOOSE_ANOTHER
    elif isinstance(exc, BackendError) and not hint:
        hint = "Check the Ollama server (its log says more), then send again."
    elif not hint:
        hint = "Check the guard model and its version on the Safety page, then send again."
    return exc.message, hint


class GuardBase(ABC):
    """What the chat, the CLI and the Safety page use of a guard: ``check`` one conversation,
    and the checks of the user's message, the answer and retrieved passages built on it. Each
    verdict is recorded in the audit log; a verdict that cannot be recorded turns into an
    unavailable one (fail closed)."""

    def __init__(self, guard_model: str, version_key: str, *, when_unavailable: str = "block",
                 audit: AuditLog | None = None, check_inputs: bool = True,
                 check_outputs: bool = True) -> None:
        self.guard_model = guard_model
        self.version_key = version_key
        self.when_unavailable = "warn" if when_unavailable == "warn" else "block"
        self.audit = audit
        self.check_inputs = check_inputs
        self.check_outputs = check_outputs
        self._lock = threading.Lock()
        self._in_flight: set[CheckCancel] = set()

    @abstractmethod
    def check(self, messages: Iterable[Mapping[str, str]], check: str | None = None, *,
              direction: Direction | None = None, conversation_id: str = "",
              raise_errors: bool = False, cancel: CheckCancel | None = None) -> GuardVerdict:
        """The verdict on ``messages`` (the checks below are built on this)."""

    def cancel(self) -> None:
        """Stop every check of this guard that is running now (from any thread); each gives
        a verdict that says it was stopped. Checks started later are not affected."""
        with self._lock:
            running = list(self._in_flight)
        for token in running:
            token.cancel()

    def check_input(self, messages: Iterable[Mapping[str, str]], *, conversation_id: str = "",
                    cancel: CheckCancel | None = None) -> GuardVerdict:
        """The user's latest message, before the chat model sees it."""
        if not self.check_inputs:
            return self._skipped("input", "checks of your messages are off")
        msgs = _until_last_user(messages)
        return _unless_stopped(self.check(msgs, "user", direction="input",
                                          conversation_id=conversation_id, cancel=cancel))

    def check_output(self, messages: Iterable[Mapping[str, str]], *, conversation_id: str = "",
                     cancel: CheckCancel | None = None) -> GuardVerdict:
        """The answer (the last assistant message, whole or partial) in its conversation."""
        if not self.check_outputs:
            return self._skipped("output", "checks of answers are off")
        return self.check(messages, "agent", direction="output", conversation_id=conversation_id,
                          cancel=cancel)

    def check_documents(self, chunks: Iterable[str], *, conversation_id: str = "",
                        cancel: CheckCancel | None = None) -> list[GuardVerdict]:
        """Retrieved passages, judged as if a user had written them, in one guard call. Only
        when that call flags them is each passage judged on its own, to tell which."""
        texts = [str(c) for c in chunks]
        if not texts:
            return []
        together = _unless_stopped(self.check(
            [{"role": "user", "content": "\n\n".join(texts)}], "user", direction="document",
            conversation_id=conversation_id, cancel=cancel))
        if len(texts) == 1 or together.verdict not in ("unsafe", "unknown"):
            return [together] * len(texts)
        return [_unless_stopped(self.check([{"role": "user", "content": t}], "user",
                                           direction="document",
                                           conversation_id=conversation_id, cancel=cancel))
                for t in texts]

    def record_override(self, reason: str, conversation_id: str = "") -> bool:
        """Record that the user chose to send a message without the guard (``reason``: why it
        was unavailable). False when the audit log cannot take it (the app log has it)."""
        verdict = GuardVerdict("skipped", guard_model=self.guard_model, version=self.version_key,
                               direction="input", action="allow",
                               reason=f"sent without the guard by the user's choice: {reason}")
        log.warning("a message was sent without the guard (conversation %s): %s",
                    conversation_id or "-", reason)
        if self.audit is None:
            return False
        try:
            self.audit.record(verdict, conversation_id)
        except CorralError as exc:
            log.warning("could not record it in the audit log: %s", exc)
            return False
        return True

    def _unavailable(self, direction: Direction, exc: BaseException,
                     elapsed_s: float = 0.0) -> GuardVerdict:
        cause, hint = failure(exc)
        return GuardVerdict.unavailable(cause, hint=hint, when_unavailable=self.when_unavailable,
                                        guard_model=self.guard_model, version=self.version_key,
                                        direction=direction, elapsed_s=elapsed_s)

    def _stopped(self, direction: Direction, elapsed_s: float = 0.0) -> GuardVerdict:
        """A check the user stopped: not checked, and the setting for an unavailable guard
        decides (fail closed), with what to do to have it checked."""
        return GuardVerdict.unavailable(STOPPED, hint=_AGAIN.get(direction, ""),
                                        when_unavailable=self.when_unavailable,
                                        guard_model=self.guard_model, version=self.version_key,
                                        direction=direction, elapsed_s=elapsed_s)

    def _record(self, verdict: GuardVerdict, conversation_id: str) -> GuardVerdict:
        if verdict.reason == _STOPPED_REASON:
            log.info("guard check stopped by the user (%s check)", verdict.direction)
        elif verdict.verdict == "unavailable":
            log.warning("guard unavailable (%s check): %s", verdict.direction, verdict.reason)
        elif verdict.verdict == "unknown":
            log.warning("guard answer not understood (%s check): %r", verdict.direction,
                        verdict.raw)
        if self.audit is None:
            return verdict
        try:
            self.audit.record(verdict, conversation_id)
        except CorralError as exc:  # no record, no pass: the check counts as unavailable
            log.warning("could not record the guard check: %s", exc)
            failed = self._unavailable(verdict.direction, exc, verdict.elapsed_s)
            failed.action = stricter(failed.action, verdict.action)
            failed.raw, failed.probability = verdict.raw, verdict.probability
            return failed
        return verdict

    def _skipped(self, direction: Direction, why: str) -> GuardVerdict:
        return GuardVerdict("skipped", guard_model=self.guard_model, version=self.version_key,
                            direction=direction, reason=why, action="allow")


class GuardService(GuardBase):
    """Checks conversations with one guard model and one policy; records each check."""

    def __init__(
        self,
        guard_model: str,
        version: str = "llama-guard-3",
        *,
        policy: Mapping[str, str] | None = None,
        when_unavailable: str = "block",
        settings: Settings,
        backend: GuardBackend | None = None,
        audit: AuditLog | bool = True,
        ollama_mode: str = "raw",
        check_inputs: bool = True,
        check_outputs: bool = True,
        timeout_s: float = 120.0,
    ) -> None:
        self.version = guard_version(version)
        if audit is True:
            from core.safety.audit import AuditLog

            log_: AuditLog | None = AuditLog()
        else:
            log_ = audit or None
        super().__init__(guard_model, self.version.key, when_unavailable=when_unavailable,
                         audit=log_, check_inputs=check_inputs, check_outputs=check_outputs)
        self.policy = dict(policy or {})
        self.timeout_s = timeout_s
        self._settings = settings
        self._backend = backend
        self.ollama_mode = ollama_mode

    @classmethod
    def from_settings(cls, settings: Settings, *, audit: AuditLog | bool = True) -> GuardService:
        s = settings.safety
        if not s.guard_model.strip():
            raise CorralError("no guard model is chosen", hint="Choose one on the Safety page.")
        return cls(s.guard_model, s.guard_version, policy=s.policy,
                   when_unavailable=s.when_unavailable, settings=settings,
                   audit=audit if s.audit else False, ollama_mode=s.ollama_mode,
                   check_inputs=s.check_input, check_outputs=s.check_output,
                   timeout_s=s.timeout_s)

    @property
    def backend(self) -> GuardBackend:
        """The runner, made on first use (resolving the model reference, starting nothing)."""
        if self._backend is None:
            from core.models.refs import resolve

            settings = self._settings
            resolved = resolve(self.guard_model, settings)
            if resolved.adapter is not None:  # never check with the base model instead
                raise CorralError(f"the guard model {self.guard_model} has a LoRA adapter, "
                                  "which the guard cannot apply",
                                  hint="Use it as ollama:NAME, or pick another guard model.")
            if resolved.kind == "ollama":
                from core.models.ollama_client import OllamaClient

                client = OllamaClient(resolved.host, settings.ollama.connect_timeout,
                                      self.timeout_s)
                self._backend = OllamaGuardBackend(client, resolved.name, self.version,
                                                   mode=self.ollama_mode)
            else:
                assert resolved.path is not None
                self._backend = EngineGuardBackend(
                    resolved.path, self.version, n_ctx=max(settings.engine.n_ctx, 2048),
                    n_threads=settings.engine.n_threads or None,
                    n_gpu_layers=settings.engine.n_gpu_layers, timeout_s=self.timeout_s,
                )
        return self._backend

    def preflight(self) -> None:
        """Raise what would keep every check from running, found without loading or calling
        the guard model: an audit log that cannot be written, a model reference that names
        nothing, a GGUF file that is damaged."""
        if self.audit is not None:
            self.audit.check_writable()
        backend = self.backend
        if isinstance(backend, EngineGuardBackend):
            from core.models import gguf_check

            gguf_check.check_loadable(backend.engine.model_path)

    def render(self, messages: Iterable[Mapping[str, str]], check: str | None = None) -> str:
        return render_guard(messages, self.version, check).text

    def check(self, messages: Iterable[Mapping[str, str]], check: str | None = None, *,
              direction: Direction | None = None, conversation_id: str = "",
              raise_errors: bool = False, cancel: CheckCancel | None = None) -> GuardVerdict:
        """Classify the last message of ``messages``. With ``raise_errors`` False a guard that
        cannot run gives an 'unavailable' verdict that says why (and the setting decides).
        ``cancel`` (or ``self.cancel()``) stops it: the verdict then says it was stopped."""
        msgs = [dict(m) for m in messages]
        started = time.perf_counter()
        token = cancel or CheckCancel()
        with self._lock:
            self._in_flight.add(token)
        try:
            if token.cancelled:
                raise CheckStopped()
            _, role = conversation_turns(msgs, check)
            direction = direction or ("input" if role == "user" else "output")
            prompt = render_guard(msgs, self.version, role)
            answer = self.backend.answer(prompt, msgs, role, cancel=token)
        except Exception as exc:  # fail by the setting, never by crashing the chat turn
            if raise_errors:
                raise
            elapsed = time.perf_counter() - started
            if token.cancelled and not isinstance(exc, GuardTimeout):
                # stopped: whatever the cut request then raised, the user stopped it
                verdict = self._stopped(direction or "input", elapsed)
            else:
                if not isinstance(exc, CorralError):
                    log.exception("unexpected error in a guard check")
                verdict = self._unavailable(direction or "input", exc, elapsed)
        else:
            verdict = GuardVerdict.from_answer(
                answer.raw, version=self.version.key, policy=self.policy,
                when_unavailable=self.when_unavailable, guard_model=self.guard_model,
                direction=direction, probability=answer.probability,
                elapsed_s=time.perf_counter() - started,
            )
        finally:
            with self._lock:
                self._in_flight.discard(token)
        return self._record(verdict, conversation_id)


class UnavailableGuard(GuardBase):
    """Stands in for a guard that cannot be built: every check is 'unavailable' with the reason
    (``problem``), so the chat blocks or warns instead of running unguarded."""

    def __init__(self, guard_model: str, version_key: str, problem: CorralError, *,
                 when_unavailable: str = "block", audit: AuditLog | None = None,
                 check_inputs: bool = True, check_outputs: bool = True) -> None:
        super().__init__(guard_model, version_key, when_unavailable=when_unavailable,
                         audit=audit, check_inputs=check_inputs, check_outputs=check_outputs)
        self.problem = problem

    @classmethod
    def from_settings(cls, settings: Settings, problem: CorralError, *,
                      audit: AuditLog | bool = True) -> UnavailableGuard:
        """The stand-in, recording its verdicts when the audit log itself is not the problem."""
        from core.errors import AuditLogError
        from core.safety.audit import AuditLog

        s = settings.safety
        log_: AuditLog | None = None if isinstance(audit, bool) else audit
        if audit is True and s.audit and not isinstance(problem, AuditLogError):
            try:
                log_ = AuditLog()
                log_.check_writable()
            except CorralError:
                log_ = None
        return cls(s.guard_model, s.guard_version, problem, when_unavailable=s.when_unavailable,
                   audit=log_, check_inputs=s.check_input, check_outputs=s.check_output)

    def check(self, messages: Iterable[Mapping[str, str]], check: str | None = None, *,
              direction: Direction | None = None, conversation_id: str = "",
              raise_errors: bool = False, cancel: CheckCancel | None = None) -> GuardVerdict:
        if raise_errors:
            raise self.problem
        if direction is None:
            last = [dict(m) for m in messages][-1:]
            direction = "output" if last and last[0].get("role") == "assistant" else "input"
        return self._record(self._unavailable(direction, self.problem), conversation_id)

    def check_documents(self, chunks: Iterable[str], *, conversation_id: str = "",
                        cancel: CheckCancel | None = None) -> list[GuardVerdict]:
        texts = list(chunks)
        if not texts:
            return []
        return [self.check([], direction="document", conversation_id=conversation_id)] * len(
            texts)


def guard_from_settings(settings: Settings, *, audit: AuditLog | bool = True
                        ) -> GuardBase | None:
    """The chat's guard: None when checks are off or no guard model is chosen; else a
    GuardService that passed its preflight, or an UnavailableGuard that says why not. Reads
    files (the audit log, the model's header): call it off the GUI thread."""
    s = settings.safety
    if not s.enabled or not s.guard_model.strip() or not (s.check_input or s.check_output
                                                           or s.check_documents):
        return None
    try:
        service = GuardService.from_settings(settings, audit=audit)
        service.preflight()
    except CorralError as exc:
        log.warning("the guard is unavailable: %s", exc.sentence())
        return UnavailableGuard.from_settings(settings, exc, audit=audit)
    return service


def _until_last_user(messages: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    """The conversation up to and including the last user message (an input check must not
    see an answer to it)."""
    msgs = [dict(m) for m in messages]
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].get("role") == "user":
            return msgs[: i + 1]
    return msgs

