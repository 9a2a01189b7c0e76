"""What the Ollama client returns: models, details, loaded models, pull progress and the
pieces of a streamed reply (plain records, FORMATS 4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class OllamaModel:
    """One row of ``/api/tags``."""

    name: str
    size: int = 0
    digest: str = ""
    modified_at: str = ""
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""
    format: str = ""


@dataclass
class OllamaModelDetails:
    """What ``/api/show`` tells: the Modelfile parts, details and GGUF metadata."""

    name: str
    modelfile: str = ""
    template: str = ""
    system: str = ""
    parameters: str = ""
    license: str = ""
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""
    model_info: dict[str, Any] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)

    @property
    def context_length(self) -> int | None:
        for key, value in self.model_info.items():
            if key.endswith(".context_length") and isinstance(value, int):
                return value
        return None


@dataclass
class LoadedModel:
    """One row of ``/api/ps``."""

    name: str
    size: int = 0
    size_vram: int = 0
    context_length: int | None = None
    expires_at: str = ""


@dataclass
class PullProgress:
    """One progress line of a pull; ``fraction`` is over all layers seen so far."""

    status: str
    digest: str = ""
    total: int = 0
    completed: int = 0
    fraction: float | None = None
    done: bool = False


@dataclass
class OllamaChunk:
    """One piece of a streamed reply; the last one has ``done`` and the statistics."""

    text: str = ""
    done: bool = False
    done_reason: str | None = None
    thinking: str = ""
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    eval_duration_ns: int | None = None
    prompt_eval_duration_ns: int | None = None
    total_duration_ns: int | None = None
    load_duration_ns: int | None = None
    #: token log-probabilities when requested (logprobs=True) and the server sends them
    logprobs: list[Any] | None = None

    @property
    def tokens_per_second(self) -> float | None:
        if self.eval_count and self.eval_duration_ns:
            return self.eval_count / self.eval_duration_ns * 1e9
        return None
