"""Generation parameters shared by both backends, and their translation to each."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from core.errors import CorralError


@dataclass
class GenerationParams:
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    max_tokens: int = 512
    context_length: int = 0  #: 0: the backend's default (GGUF: engine n_ctx; Ollama: model's)
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def validate(self) -> GenerationParams:
        problems = []
        if not 0.0 <= self.temperature <= 5.0:
            problems.append("temperature must be between 0 and 5")
        if not 0.0 < self.top_p <= 1.0:
            problems.append("top_p must be above 0 and at most 1")
        if self.top_k < 0:
            problems.append("top_k must not be negative")
        if self.repeat_penalty <= 0:
            problems.append("repeat penalty must be above 0")
        if self.max_tokens < 1:
            problems.append("max tokens must be at least 1")
        if self.context_length < 0:
            problems.append("context length must not be negative")
        if problems:
            raise CorralError("invalid generation parameters: " + "; ".join(problems))
        return self

    def engine_kwargs(self, extra_stop: tuple[str, ...] = ()) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
            "seed": self.seed,
            "stop": [*self.stop, *(s for s in extra_stop if s not in self.stop)],
        }

    def ollama_options(self, extra_stop: tuple[str, ...] = ()) -> dict[str, Any]:
        options: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
            "num_predict": self.max_tokens,
        }
        if self.context_length:
            options["num_ctx"] = self.context_length
        if self.seed is not None:
            options["seed"] = self.seed
        stop = [*self.stop, *(s for s in extra_stop if s not in self.stop)]
        if stop:
            options["stop"] = stop
        return options

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> GenerationParams:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (raw or {}).items() if k in names})

    @classmethod
    def from_settings(cls, chat: Any) -> GenerationParams:
        """Defaults from core.config.ChatSettings."""
        return cls(
            temperature=chat.temperature,
            top_p=chat.top_p,
            top_k=chat.top_k,
            repeat_penalty=chat.repeat_penalty,
            max_tokens=chat.max_tokens,
        )
