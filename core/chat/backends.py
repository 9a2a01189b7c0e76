"""The two ways Corral talks to a chat model: llama.cpp (the engine child, fed token ids built
segment by segment) and Ollama (raw mode with our own exact string, or /api/chat for the
``model`` format). Both stream ``StreamEvent``s and can be cancelled from any thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.chat.params import GenerationParams
from core.errors import PromptFormatError, StreamInterrupted
from core.prompts.base import Message, RenderedPrompt, TagPolicy
from core.prompts.formats import ModelTemplate, PromptTokenizer, pick_format, render


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


class ChatBackend(Protocol):
    def info(self) -> BackendInfo: ...
    def prepare(self, messages: Sequence[Message], fmt: str, tags: TagPolicy) -> PreparedPrompt: ...
    def count(self, text_messages: Sequence[Message], fmt: str, tags: TagPolicy) -> int | None: ...
    def stream(self, prompt: PreparedPrompt, params: GenerationParams) -> Iterator[StreamEvent]: ...
    def cancel(self) -> None: ...


def _rate(tokens: int | None, seconds: float | None) -> float | None:
    if tokens and seconds and seconds > 0:
        return tokens / seconds
    return None


# --- llama.cpp ---------------------------------------------------------------------------


def _fit_context(path: Path, wanted: int) -> int:
    """The context to ask llama.cpp for: the setting, but never past what the model was
    trained on (longer contexts only produce garbage and waste memory)."""
    from core.errors import CorralError
    from core.models.catalog import gguf_info

    try:
        trained = gguf_info(path).context_length
    except CorralError:
        return wanted  # the engine's own load reports what is wrong with the file
    return min(wanted, trained) if trained else wanted


class LlamaCppBackend:
    """A GGUF through the engine child. Prompts go as token ids (special=False for text)."""

    def __init__(self, path: str | Path, *, n_ctx: int = 4096, n_threads: int | None = None,
                 engine: Any = None, display: str | None = None) -> None:
        from core.models.engine import shared_engine

        self.path = Path(path)
        self.display = display or self.path.name
        opts: dict[str, Any] = {"n_ctx": _fit_context(self.path, n_ctx)}
        if n_threads:
            opts["n_threads"] = n_threads
        self.engine = engine or shared_engine(self.path, **opts)
        self._info: dict[str, Any] | None = None
        self._tokenizer: PromptTokenizer | None = None
        self._template: ModelTemplate | None = None

    def _load(self) -> dict[str, Any]:
        if self._info is None:
            self._info = dict(self.engine.load())
            self._tokenizer = PromptTokenizer(self.engine, self._info)
        return self._info

    @property
    def tokenizer(self) -> PromptTokenizer:
        self._load()
        assert self._tokenizer is not None
        return self._tokenizer

    def info(self) -> BackendInfo:
        info = self._load()
        meta = info.get("metadata") or {}
        name = str(meta.get("general.name") or self.path.stem)
        fmt, reason = pick_format(name=f"{name} {self.path.stem}",
                                  family=str(meta.get("general.architecture", "")),
                                  template=info.get("chat_template"))
        return BackendInfo("gguf", self.display, int(info.get("n_ctx") or 0) or None, fmt, reason,
                           bool(info.get("chat_template")), {"metadata": meta})

    def model_template(self) -> ModelTemplate:
        if self._template is None:
            info = self._load()
            source = info.get("chat_template")
            if not source:
                raise PromptFormatError(
                    "this model has no chat template of its own",
                    hint="Choose the llama2 or codellama70b format.",
                )
            n_vocab = int(info.get("n_vocab") or 0)
            ids = list(range(n_vocab))
            types = self.engine.token_types(ids)
            special_ids = [i for i, t in zip(ids, types, strict=False)
                           if t in ("control", "user_defined")]
            pieces = self.engine.token_pieces(special_ids) if special_ids else []
            texts = tuple(p.decode("utf-8", "replace") for p in pieces if p)
            bos, eos = int(info["bos"]), int(info["eos"])
            bos_text, eos_text = (p.decode("utf-8", "replace")
                                  for p in self.engine.token_pieces([bos, eos]))
            self._template = ModelTemplate(str(source), bos_text, eos_text,
                                           bool(info.get("add_bos", True)), texts)
        return self._template

    def render(self, messages: Sequence[Message], fmt: str, tags: TagPolicy) -> RenderedPrompt:
        template = self.model_template() if fmt == "model" else None
        return render(messages, fmt, tags=tags, template=template)

    def prepare(self, messages: Sequence[Message], fmt: str, tags: TagPolicy) -> PreparedPrompt:
        rendered = self.render(messages, fmt, tags)
        ids = self.tokenizer.ids(rendered)
        # A stop that is a control token (Code Llama 70B's <step>) never shows up as text,
        # since control tokens detokenize to nothing: stop on its id instead.
        stop_ids = tuple(self.tokenizer.special_id(s) for s in rendered.stop
                         if s.startswith("<") and s.endswith(">") and s in rendered.text)
        return PreparedPrompt(rendered, token_ids=ids, token_count=len(ids),
                              exact_text=rendered.text, stop_ids=stop_ids)

    def count(self, messages: Sequence[Message], fmt: str, tags: TagPolicy) -> int | None:
        return len(self.tokenizer.ids(self.render(messages, fmt, tags)))

    def count_text(self, text: str) -> int:
        return len(self.engine.tokenize(text, add_bos=False, special=False))

    def stream(self, prompt: PreparedPrompt, params: GenerationParams) -> Iterator[StreamEvent]:
        assert prompt.token_ids is not None
        kwargs = params.engine_kwargs(prompt.stop)
        for ev in self.engine.generate(prompt.token_ids, stop_ids=prompt.stop_ids, **kwargs):
            if not ev.done:
                yield StreamEvent(text=ev.text, completion_tokens=ev.completion_tokens)
                continue
            eval_s = (ev.total_s - ev.first_token_s) if ev.total_s and ev.first_token_s else None
            rate = _rate(ev.completion_tokens - 1, eval_s) if ev.completion_tokens > 1 else None
            yield StreamEvent(done=True, finish_reason=ev.finish_reason,
                              prompt_tokens=ev.prompt_tokens,
                              completion_tokens=ev.completion_tokens,
                              first_token_s=ev.first_token_s, total_s=ev.total_s,
                              tokens_per_s=rate or _rate(ev.completion_tokens, ev.total_s))

    def cancel(self) -> None:
        self.engine.cancel()


# --- Ollama ------------------------------------------------------------------------------


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
                                      tokens_per_s=_rate(count, total - (first or 0)))
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
                    rate = _rate(evals, eval_ns / 1e9) if eval_ns else _rate(evals, total)
                    yield StreamEvent(done=True, finish_reason=_get(chunk, "done_reason") or "stop",
                                      prompt_tokens=_get(chunk, "prompt_eval_count"),
                                      completion_tokens=evals, first_token_s=first, total_s=total,
                                      tokens_per_s=rate)
                    return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # drops the HTTP stream: Ollama stops generating
        raise StreamInterrupted("Ollama ended the answer without saying it was done")

    def cancel(self) -> None:
        self._cancel.set()
