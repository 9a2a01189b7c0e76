"""What every chat backend shares: the stream events, the prepared prompt, the backend's
info and the ``ChatBackend`` protocol. The two backends live beside this module:
``llama_backend`` (the engine child, fed token ids built segment by segment) and
``ollama_backend`` (raw mode with our own exact string, or /api/chat for the ``model``
format). Both stream ``StreamEvent``s and can be cancelled from any thread."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.chat.params import GenerationParams
from core.prompts.base import Message, RenderedPrompt, TagPolicy


@dataclass
class StreamEvent:
    text: str = ""
    done: bool = False
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token_s: float | None = None
    total_s: float | None = None
    tokens_per_s: float | None = None
    #: on the done event: something the user should know about the answer (a cut prompt)
    warning: str | None = None


@dataclass
class PreparedPrompt:
    """What will be sent: the rendered prompt plus the backend's exact payload."""

    rendered: RenderedPrompt | None  #: None for Ollama's own template (/api/chat)
    token_ids: list[int] | None = None  #: llama.cpp
    raw: str | None = None  #: Ollama raw mode
    chat_messages: list[dict[str, str]] | None = None  #: Ollama /api/chat
    token_count: int | None = None  #: by the model's own tokenizer, when known
    exact_text: str = ""  #: what the inspector shows
    stop_ids: tuple[int, ...] = ()  #: llama.cpp: control tokens that end the answer (<step>)

    @property
    def stop(self) -> tuple[str, ...]:
        return self.rendered.stop if self.rendered else ()


@dataclass
class BackendInfo:
    kind: str  #: 'gguf' or 'ollama'
    name: str
    context_length: int | None
    format: str  #: the format Corral picks for this model
    format_reason: str
    has_template: bool
    details: dict[str, Any] = field(default_factory=dict)
    #: token counts come from the model's own vocabulary; False: estimates (the meter shows ≈)
    exact_counts: bool = True


class ChatBackend(Protocol):
    def info(self) -> BackendInfo: ...
    def prepare(self, messages: Sequence[Message], fmt: str, tags: TagPolicy) -> PreparedPrompt: ...
    def count(self, text_messages: Sequence[Message], fmt: str, tags: TagPolicy) -> int | None: ...
    def use_context(self, requested: int) -> int | None:
        """Apply the context length the user picked (0: the default) and return the length
        the model really gets, which the meter and the overflow check use."""
        ...
    def stream(self, prompt: PreparedPrompt, params: GenerationParams) -> Iterator[StreamEvent]: ...
    def cancel(self) -> None: ...


def rate(tokens: int | None, seconds: float | None) -> float | None:
    if tokens and seconds and seconds > 0:
        return tokens / seconds
    return None
