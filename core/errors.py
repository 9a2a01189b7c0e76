"""One typed error hierarchy for Corral: every adapter maps foreign exceptions here.

Each error carries a sentence for people (``str(err)``) that says what happened and,
where it helps, what to do. The GUI and the CLI show that sentence; logs keep tracebacks.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base of every error Corral raises on purpose."""

    #: A short hint on what the user can do about it (shown after the message).
    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__

    def sentence(self) -> str:
        """The message plus the hint, as one line for people."""
        msg = self.message.rstrip(".")
        return f"{msg}. {self.hint}" if self.hint else f"{msg}."


# --- backends and models -------------------------------------------------------------


class BackendUnavailable(CorralError):
    """A server (Ollama, Chroma) does not answer at its address."""

    hint = "Start it, or change the host in Settings."


class BackendError(CorralError):
    """A server answered with an error we cannot map to something more precise."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


class BackendTimeout(BackendError):
    """A server accepted the connection but did not answer in time."""


class ModelNotFound(CorralError):
    """The model reference names nothing that exists."""


class StreamInterrupted(CorralError):
    """A stream broke off; ``partial`` keeps what had arrived."""

    def __init__(self, message: str, *, partial: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.partial = partial


class EngineCrashed(CorralError):
    """The llama.cpp engine child process died (``reason`` says how)."""

    def __init__(self, reason: str, *, partial: str = "", hint: str | None = None):
        super().__init__(f"engine crashed: {reason}", hint=hint)
        self.reason = reason
        self.partial = partial


class EngineHung(EngineCrashed):
    """The engine child stopped answering (no reply, no heartbeat), so Corral killed it."""

    hint = "Try again: the next request starts a fresh engine."

    def __init__(self, seconds: float, *, partial: str = "") -> None:
        super().__init__(f"it stopped answering for {seconds:g} s and was killed", partial=partial)
        self.args = (f"the engine stopped answering for {seconds:g} s, so Corral killed it",)


class EngineBusy(CorralError):
    """A model that is answering, checking or being measured cannot be unloaded."""

    hint = "Stop what it is doing, or wait until it is done, then unload it."


class ModelFileDamaged(CorralError):
    """A model file is not a usable GGUF (bad magic, truncated, absurd sizes ...)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"model file damaged: {path}: {reason}")
        self.path = path
        self.reason = reason


class UnsafeTemplate(CorralError):
    """A chat template tried something the sandbox forbids, or is otherwise hostile."""


class PromptFormatError(CorralError):
    """A conversation does not fit the prompt format (roles not alternating ...)."""


class ContextOverflow(CorralError):
    """The prompt does not fit the model's context window."""

    def __init__(self, message: str, *, needed: int = 0, available: int = 0):
        super().__init__(message, hint="Drop the oldest turns or pick a longer context.")
        self.needed = needed
        self.available = available


class Cancelled(CorralError):
    """The user cancelled the operation; ``partial`` keeps what was done by then, if anything."""

    def __init__(self, message: str = "cancelled", *, partial: object = None) -> None:
        super().__init__(message)
        self.partial = partial


# --- documents -----------------------------------------------------------------------


class DocumentUnreadable(CorralError):
    """A document could not be parsed; the message says why (encrypted, scanned ...)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class StoreLocked(CorralError):
    """Another Corral process owns this Chroma directory."""

    hint = "Close the other Corral window, or use a Chroma server in Settings."


class StoreError(CorralError):
    """The vector store failed or holds something we cannot use."""


class EmbedderMismatch(StoreError):
    """A knowledge base was built with another embedder; mixing vector spaces is refused."""

    hint = "Re-index the knowledge base with the new embedder."


class KnowledgeBaseNotFound(CorralError):
    """No knowledge base by that name."""


class KnowledgeBaseBusy(CorralError):
    """Another Corral (on this or another machine) is indexing this knowledge base."""


# --- settings and misc ---------------------------------------------------------------


class SettingsError(CorralError):
    """The settings file cannot be read or holds invalid values."""


class GuardAnswerNotUnderstood(CorralError):
    """The guard model answered something that is neither 'safe' nor 'unsafe\\n<codes>'."""


class FeatureUnavailable(CorralError):
    """A feature needs something that is not installed or not landed yet."""


# --- safety --------------------------------------------------------------------------


class AuditLogError(CorralError):
    """The audit log cannot be opened or written: damaged, locked or read-only."""


class GuardTimeout(CorralError):
    """The guard model did not finish its answer within the guard's time limit."""

    def __init__(self, seconds: float, *, partial: str = "") -> None:
        super().__init__(f"the guard did not answer within {seconds:g} s",
                         hint="Send again, or raise the guard's time limit on the Safety page.")
        self.partial = partial


class CheckStopped(Cancelled):
    """The check was stopped (its ``CheckCancel``) before the guard finished its answer."""

    def __init__(self, *, partial: str = "") -> None:
        super().__init__("the guard's check was stopped before it answered", partial=partial)


class CodeShieldUnavailable(CorralError):
    """CodeShield's rule files are missing or cannot be read."""

    hint = "Install Corral's dependencies again: pip install -e ."

    def __init__(self, why: str = "are not installed") -> None:
        super().__init__(f"CodeShield's rules {why}, so its checks did not run")


# --- workshop ------------------------------------------------------------------------


class NotEnoughSpace(CorralError):
    """The disk (or a file-size limit) has no room for the output."""

    hint = "Free some space, or choose another folder with --out."


class UnreadableTensorType(CorralError):
    """A tensor is stored in a type the ``gguf`` dequantizer cannot read."""

    hint = "Start from an F16, BF16 or F32 copy of the model, or a common quantized type."


class MergeRefused(CorralError):
    """The merge cannot be done as asked (bad parameters, models that do not fit together)."""


class VocabularyMismatch(CorralError):
    """Two models tokenize the text differently, so their next-token distributions do not
    line up."""

    hint = "Compare variants of one model (quantized or merged from it)."


# --- evaluation and the desktop entry ------------------------------------------------


class EvaluationInputError(CorralError):
    """A queries or STS file cannot be used, or the documents give nothing to ask."""


class DesktopEntryError(CorralError):
    """The desktop entry cannot be installed or removed where it was asked to."""
