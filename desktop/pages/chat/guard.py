"""The Chat page's safety guard: built from the settings (again only when what it depends on
changes), and wrapped for each turn so the page can say when a check is running."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from core.chat.hooks import Verdict
    from core.config import Settings
    from core.safety.guard import GuardService
    from desktop.jobs import Job


class TurnGuard:
    """The guard for one turn, called by the session in the worker: it sends the page the
    text still held back (``flush``), says a check starts (a partial ``("checking",
    direction, 0)``), then runs the check.

    It is the session's ``core.chat.hooks.Guard``. Its verdicts are GuardVerdicts, which the
    ``Verdict`` protocol only reads; the casts say so, since that protocol declares its members
    as settable variables and mypy then rejects GuardVerdict's narrower field types."""

    def __init__(self, guard: GuardService, job: Job,
                 flush: Callable[[], None] | None = None) -> None:
        self.guard = guard
        self.job = job
        self.flush = flush

    def _announce(self, direction: str, on: bool) -> None:
        if self.flush is not None:
            self.flush()
        if on:
            self.job.partial(("checking", direction, 0))

    def check_input(self, messages: list[dict[str, str]], *,
                    conversation_id: str = "") -> Verdict:
        self._announce("input", self.guard.check_inputs)
        return cast("Verdict", self.guard.check_input(messages,
                                                      conversation_id=conversation_id))

    def check_output(self, messages: list[dict[str, str]], *,
                     conversation_id: str = "") -> Verdict:
        self._announce("output", self.guard.check_outputs)
        return cast("Verdict", self.guard.check_output(messages,
                                                       conversation_id=conversation_id))

    def check_documents(self, chunks: Sequence[str], *,
                        conversation_id: str = "") -> Sequence[Verdict]:
        self._announce("documents", True)
        return cast("list[Verdict]", self.guard.check_documents(
            chunks, conversation_id=conversation_id))


class ChatGuard:
    """Holds the chat's GuardService (``core.safety.guard.guard_from_settings``), or None when
    checks are off. Building it starts nothing: the first check loads the guard model in a
    worker, and it then stays loaded (the engine child is shared per model file; Ollama keeps
    it with keep_alive), also across rebuilds."""

    def __init__(self) -> None:
        self.service: GuardService | None = None
        self.documents = False  #: retrieved passages are checked too
        self._key = ""

    def update(self, settings: Settings) -> bool:
        """Rebuild from ``settings`` if its safety, Ollama or engine sections changed; True when
        rebuilt. A guard that cannot be built raises (the service is then None)."""
        key = repr((asdict(settings.safety), asdict(settings.ollama), asdict(settings.engine)))
        if key == self._key:
            return False
        self._key = key
        self.service = None
        self.documents = bool(settings.safety.check_documents)
        from core.safety.guard import guard_from_settings

        self.service = guard_from_settings(settings)
        return True

    def note(self) -> tuple[str, str]:
        """(label, tooltip) saying which guard checks what."""
        g = self.service
        if g is None:
            return "Safety checks off", "Choose a guard model on the Safety page."
        checks = [name for name, on in (("your messages", g.check_inputs),
                                        ("answers", g.check_outputs),
                                        ("document passages", self.documents)) if on]
        listed = " and ".join([", ".join(checks[:-1]), checks[-1]] if len(checks) > 1 else checks)
        return (f"Guard: {g.guard_model}", f"{g.guard_model} ({g.version.key}) checks {listed}.")
