"""A model served by Ollama: our formats through raw mode (the exact string), the ``model``
format through /api/chat and Ollama's own template."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from core.chat.backends import BackendInfo, PreparedPrompt, StreamEvent, rate
from core.chat.params import GenerationParams
from core.errors import StreamInterrupted
from core.prompts.base import Message, TagPolicy
from core.prompts.formats import PromptTokenizer, pick_format, render


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


class OllamaBackend:
    """A model served by Ollama. Our formats go through raw mode (the exact string, BOS left to
    the runner); the ``model`` format goes through /api/chat and Ollama's own template."""

    def __init__(self, client: Any, model: str, *, counter: PromptTokenizer | None = None) -> None:
        self.client = client
        self.model = model
        self.counter = counter  #: a tokenizer for exact counts (the model's GGUF blob), if any
        self._show: Any = None
        self._cancel = threading.Event()

    def _details(self) -> Any:
        if self._show is None:
            self._show = self.client.show(self.model)
        return self._show

    def info(self) -> BackendInfo:
        shown = self._details()
        details = _get(shown, "details") or {}
        template = str(_get(shown, "template") or "")
        family = str(_get(shown, "family") or _get(details, "family", "") or "")
        ctx = _get(shown, "context_length")
        if ctx is None:
            for key, value in dict(_get(shown, "model_info") or {}).items():
                if str(key).endswith(".context_length") and isinstance(value, int):
                    ctx = value
        fmt, reason = pick_format(name=self.model, family=family, template=template)
        return BackendInfo("ollama", f"ollama:{self.model}", ctx, fmt, reason, bool(template),
                           {"family": family, "template": template})

    def prepare(self, messages: Sequence[Message], fmt: str, tags: TagPolicy) -> PreparedPrompt:
        if fmt == "model":
            chat = [m.to_dict() for m in messages]
            shown = "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages)
            return PreparedPrompt(None, chat_messages=chat, exact_text=shown)
        rendered = render(messages, fmt, tags=tags, for_ollama=True)
        count = None
        if self.counter is not None:
            count = len(self.counter.ids(rendered))
        assert rendered.raw is not None
        return PreparedPrompt(rendered, raw=rendered.raw, token_count=count,
                              exact_text=rendered.text)

    def use_context(self, requested: int) -> int | None:
        # SKELETON: num_ctx is sent only when the user picked a length
        return requested or self.info().context_length

    def count(self, messages: Sequence[Message], fmt: str, tags: TagPolicy) -> int | None:
        if self.counter is None or fmt == "model":
            return None
        return len(self.counter.ids(render(messages, fmt, tags=tags, for_ollama=True)))

    def stream(self, prompt: PreparedPrompt, params: GenerationParams) -> Iterator[StreamEvent]:
        self._cancel.clear()
        options = params.ollama_options(prompt.stop)
        if prompt.chat_messages is not None:
            chunks = self.client.chat(self.model, prompt.chat_messages, options)
        else:
            assert prompt.raw is not None
            chunks = self.client.generate_raw(self.model, prompt.raw, options)
        started = time.perf_counter()
        first: float | None = None
        count = 0
        try:
            for chunk in chunks:
                if self._cancel.is_set():
                    total = time.perf_counter() - started
                    yield StreamEvent(done=True, finish_reason="cancelled", completion_tokens=count,
                                      first_token_s=first, total_s=total,
                                      tokens_per_s=rate(count, total - (first or 0)))
                    return
                text = _get(chunk, "text", "") or ""
                if text:
                    count += 1
                    if first is None:
                        first = time.perf_counter() - started
                    yield StreamEvent(text=text, completion_tokens=count)
                if _get(chunk, "done", False):
                    evals = _get(chunk, "eval_count") or count
                    eval_ns = _get(chunk, "eval_duration_ns") or _get(chunk, "eval_duration")
                    total = time.perf_counter() - started
                    speed = rate(evals, eval_ns / 1e9) if eval_ns else rate(evals, total)
                    yield StreamEvent(done=True, finish_reason=_get(chunk, "done_reason") or "stop",
                                      prompt_tokens=_get(chunk, "prompt_eval_count"),
                                      completion_tokens=evals, first_token_s=first, total_s=total,
                                      tokens_per_s=speed)
                    return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # drops the HTTP stream: Ollama stops generating
        raise StreamInterrupted("Ollama ended the answer without saying it was done")

    def cancel(self) -> None:
        self._cancel.set()
