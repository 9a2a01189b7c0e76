"""The Chat page's safety guard: built from the settings in a worker (again only when what it
depends on changes), wrapped for each turn so the page can say when a check is running and
Stop can stop it, and what the toolbar says about it - always the truth: off, on, or
unavailable and why."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from core.chat.hooks import Verdict
    from core.config import Settings
    from core.safety.guard import CheckCancel, GuardBase
    from desktop.jobs import Job


class TurnGuard:
    """The guard for one turn, called by the session in the worker: it sends the page the
    text still held back (``flush``), says a check starts (a partial ``("checking",
    direction, 0)``), then runs the check.

    Stop (``cancel``, through ``ChatSession.cancel``) stops the check that runs now. Stopped
    during (or before) the check of the message or of passages, the turn ends before anything
    is stored or sent (Cancelled). The check of an answer runs also after a Stop that ended
    its stream (the partial answer is checked); a Stop during that check ends it, and the
    answer's verdict says it was not checked (blocked or warned as the settings say).

    It is the session's ``core.chat.hooks.Guard``. Its verdicts are GuardVerdicts, which the
    ``Verdict`` protocol only reads; the casts say so, since that protocol declares its members
    as settable variables and mypy then rejects GuardVerdict's narrower field types."""

    def __init__(self, guard: GuardBase, job: Job,
                 flush: Callable[[], None] | None = None) -> None:
        self.guard = guard
        self.job = job
        self.flush = flush
        self._lock = threading.Lock()
        self._running: CheckCancel | None = None

    @property
    def check_outputs(self) -> bool:
        return self.guard.check_outputs

    def cancel(self) -> None:
        """Stop the check that runs now (any thread); a check started later is not stopped."""
        with self._lock:
            running = self._running
        if running is not None:
            running.cancel()

    @contextmanager
    def _check(self, *, stop_if_cancelled: bool) -> Iterator[CheckCancel]:
        """The stop token of one check, known to ``cancel`` while it runs. A Stop that came
        just before it (``stop_if_cancelled``) stops it at once."""
        from core.safety.guard import CheckCancel

        token = CheckCancel()
        with self._lock:
            self._running = token
        if stop_if_cancelled and self.job.cancelled:
            token.cancel()
        try:
            yield token
        finally:
            with self._lock:
                self._running = None

    def _announce(self, direction: str, on: bool) -> None:
        if self.flush is not None:
            self.flush()
        if on:
            self.job.partial(("checking", direction, 0))

    def check_input(self, messages: list[dict[str, str]], *,
                    conversation_id: str = "") -> Verdict:
        self.job.check()  # Stop before the check: nothing is stored or sent
        self._announce("input", self.guard.check_inputs)
        with self._check(stop_if_cancelled=True) as token:
            verdict = self.guard.check_input(messages, conversation_id=conversation_id,
                                             cancel=token)
        self.job.check()
        return cast("Verdict", verdict)

    def check_output(self, messages: list[dict[str, str]], *,
                     conversation_id: str = "") -> Verdict:
        self._announce("output", self.guard.check_outputs)
        with self._check(stop_if_cancelled=False) as token:
            verdict = self.guard.check_output(messages, conversation_id=conversation_id,
                                              cancel=token)
        return cast("Verdict", verdict)

    def check_documents(self, chunks: Sequence[str], *,
                        conversation_id: str = "") -> Sequence[Verdict]:
        self.job.check()
        self._announce("documents", True)
        with self._check(stop_if_cancelled=True) as token:
            verdicts = self.guard.check_documents(chunks, conversation_id=conversation_id,
                                                  cancel=token)
        self.job.check()
        return cast("list[Verdict]", verdicts)

    def record_override(self, reason: str, conversation_id: str = "") -> bool:
        return self.guard.record_override(reason, conversation_id)


def _checks(settings: Settings) -> str:
    s = settings.safety
    names = [name for name, on in (("your messages", s.check_input), ("answers", s.check_output),
                                   ("document passages", s.check_documents)) if on]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


class ChatGuard:
    """The chat's guard (``core.safety.guard.guard_from_settings``): None when checks are off,
    a GuardService, or an UnavailableGuard that says why it could not be built. ``current``
    builds it and reads files: call it in a worker. Built, it starts nothing: the first check
    loads the guard model, which then stays loaded (the engine child is shared per model
    file; Ollama keeps it with keep_alive), also across rebuilds.

    ``failed`` is the verdict of the last check that could not judge (cleared by one that
    could): the toolbar says so until a check works again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: str | None = None
        self.guard: GuardBase | None = None
        self.failed: dict[str, Any] | None = None

    @staticmethod
    def key(settings: Settings) -> str:
        return repr((asdict(settings.safety), asdict(settings.ollama), asdict(settings.engine)))

    def built_for(self, settings: Settings) -> bool:
        return self._key == self.key(settings)

    def current(self, settings: Settings) -> GuardBase | None:
        """The guard for ``settings`` (in a worker), built again if they changed, and tried
        again while it is unavailable: its cause (a locked log, a missing file) may be gone."""
        from core.safety.guard import UnavailableGuard, guard_from_settings

        key = self.key(settings)
        with self._lock:
            if key != self._key or isinstance(self.guard, UnavailableGuard):
                self.guard = guard_from_settings(settings)
                self._key = key
                self.failed = None
            return self.guard

    def saw(self, verdict: Mapping[str, Any] | None) -> None:
        """A verdict of a turn (GUI thread): a guard that could not judge, or one that did."""
        from core.safety.guard import was_stopped

        kind = (verdict or {}).get("verdict")
        if was_stopped(verdict):  # the user stopped the check: the guard did not fail
            return
        if kind in ("unavailable", "unknown"):
            self.failed = dict(verdict or {})
        elif kind in ("safe", "unsafe"):
            self.failed = None

    def note(self, settings: Settings) -> tuple[str, str, bool]:
        """(label, tooltip, trouble) for the toolbar: which guard checks what, or why it
        cannot. Until a build for ``settings`` is done, what the settings say."""
        from core.safety.guard import UnavailableGuard
        from core.safety.verdict import unavailable_action

        s = settings.safety
        if not s.enabled or not s.guard_model.strip() or not _checks(settings):
            return "Safety checks off", "Choose a guard model on the Safety page.", False
        built = self.built_for(settings)
        if built and self.guard is None:  # e.g. checks turned off meanwhile
            return "Safety checks off", "Choose a guard model on the Safety page.", False
        blocks = unavailable_action(s.when_unavailable) == "block"
        outcome = ("Messages are blocked until it works again; you can send one at a time "
                   "without the guard." if blocks else
                   "Messages go through with a warning until it works again.")
        label = ("Guard unavailable: messages blocked" if blocks
                 else "Guard unavailable: warnings only")
        if built and isinstance(self.guard, UnavailableGuard):
            return label, f"{self.guard.problem.sentence()}\n{outcome}", True
        if built and self.failed is not None:
            why = str(self.failed.get("reason") or "")
            hint = str(self.failed.get("hint") or "")
            if self.failed.get("verdict") == "unknown":
                label = "Guard answer not understood"
                why = f"The last answer of {s.guard_model} was not understood ({why})."
            else:
                why = f"The last check could not run: {why}. {hint}".strip()
            return label, f"{why}\n{outcome}", True
        return (f"Guard: {s.guard_model}",
                f"{s.guard_model} ({s.guard_version}) checks {_checks(settings)}.", False)
