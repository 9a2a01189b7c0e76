"""A GGUF through the llama.cpp engine child: prompts go as token ids built segment by segment
(special=False for message text), so no message can smuggle in a control token."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from core.chat.backends import BackendInfo, PreparedPrompt, StreamEvent, rate
from core.chat.params import GenerationParams
from core.errors import EngineCrashed, PromptFormatError
from core.models.engine import CancelToken
from core.prompts.base import Message, RenderedPrompt, TagPolicy
from core.prompts.formats import ModelTemplate, PromptTokenizer, pick_format, render


class LlamaCppBackend:
    """A GGUF through the engine child. Prompts go as token ids (special=False for text).

    ``n_ctx`` is the default context length (the setting); ``use_context`` applies the one a
    conversation picks, capped at the length the model was trained on."""

    def __init__(self, path: str | Path, *, n_ctx: int = 4096, n_threads: int | None = None,
                 n_gpu_layers: int = 0, lora_path: str | None = None, engine: Any = None,
                 display: str | None = None) -> None:
        from core.models.pool import engine_pool

        self.path = Path(path)
        self.display = display or self.path.name
        self.default_n_ctx = n_ctx
        self.lora_path = lora_path
        self._trained: int | None = None
        self.engine = engine or engine_pool().engine(
            self.path, n_ctx=self._fit_context(n_ctx), n_threads=n_threads,
            n_gpu_layers=n_gpu_layers, lora_path=lora_path)
        self._info: dict[str, Any] | None = None
        self._tokenizer: PromptTokenizer | None = None
        self._template: ModelTemplate | None = None
        self._token: CancelToken | None = None  # the request Stop stops

    def _fit_context(self, wanted: int) -> int:
        """The context to ask llama.cpp for: ``wanted``, but never past what the model was
        trained on (longer contexts only produce garbage and waste memory)."""
        if self._trained is None:
            from core.errors import CorralError
            from core.models.catalog import gguf_info

            try:
                self._trained = int(gguf_info(self.path).context_length or 0)
            except CorralError:
                self._trained = 0  # the engine's own load reports what is wrong with the file
        return min(wanted, self._trained) if self._trained else wanted

    @contextlib.contextmanager
    def _stoppable(self) -> Iterator[CancelToken]:
        token = self._token = CancelToken()
        try:
            yield token
        finally:
            self._token = None

    def _load(self) -> dict[str, Any]:
        """The model's load info, loading it once (facts that do not change: metadata,
        template, special tokens; an engine unloaded since reloads on its next request)."""
        if self._info is None:
            with self._stoppable() as token:
                self._info = dict(self.engine.load(cancel=token))
            if self._tokenizer is None:
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
            texts = tuple(p.decode("utf-8", "replace") for p in self.engine.special_tokens() if p)
            bos, eos = int(info["bos"]), int(info["eos"])
            bos_text, eos_text = (p.decode("utf-8", "replace")
                                  for p in self.engine.token_pieces([bos, eos]))
            self._template = ModelTemplate(str(source), bos_text, eos_text,
                                           bool(info.get("add_bos", True)), texts)
        return self._template

    def render(self, messages: Sequence[Message], fmt: str, tags: TagPolicy) -> RenderedPrompt:
        template = self.model_template() if fmt == "model" else None
        bos = None  # the raw format writes the model's BOS when its tokenizer adds one
        if fmt == "raw" and self._load().get("add_bos", True):
            bos = self.engine.token_pieces([int(self._load()["bos"])])[0].decode("utf-8", "replace")
        return render(messages, fmt, tags=tags, template=template, bos=bos)

    def prepare(self, messages: Sequence[Message], fmt: str, tags: TagPolicy) -> PreparedPrompt:
        rendered = self.render(messages, fmt, tags)
        ids = self.tokenizer.ids(rendered)
        # A stop that is a control token (Code Llama 70B's <step>) never shows up as text,
        # since control tokens detokenize to nothing: stop on its id instead.
        stop_ids = tuple(self.tokenizer.special_id(s) for s in rendered.stop
                         if s.startswith("<") and s.endswith(">") and s in rendered.text)
        return PreparedPrompt(rendered, token_ids=ids, token_count=len(ids),
                              exact_text=rendered.text, stop_ids=stop_ids)

    def use_context(self, requested: int) -> int | None:
        """Reopen the engine (if needed) with ``requested`` tokens of context (0: the default),
        capped at the trained length. Returns the length the conversation may fill: what
        llama.cpp gave the engine (it rounds up to a multiple of 256), never more than asked.
        A vocabulary-only engine (token counts) has no context: it only says the length."""
        wanted = self._fit_context(requested or self.default_n_ctx)
        if getattr(self.engine, "options", {}).get("vocab_only"):
            return wanted or None
        self.engine.configure(n_ctx=wanted)
        info = self.engine.current_info  # already loaded with it: no wait behind a stream
        if info is None:
            self._info = None
            info = self._load()
        given = int(info.get("n_ctx") or 0)
        return min(wanted, given) if given else wanted or None

    def count(self, messages: Sequence[Message], fmt: str, tags: TagPolicy) -> int | None:
        return len(self.tokenizer.ids(self.render(messages, fmt, tags)))

    def count_text(self, text: str) -> int:
        return len(self.engine.tokenize(text, add_bos=False, special=False))

    def stream(self, prompt: PreparedPrompt, params: GenerationParams) -> Iterator[StreamEvent]:
        assert prompt.token_ids is not None
        kwargs = params.engine_kwargs(prompt.stop)
        with self._stoppable() as token, self._naming_the_adapter():
            for ev in self.engine.generate(prompt.token_ids, stop_ids=prompt.stop_ids,
                                           cancel=token, **kwargs):
                if not ev.done:
                    yield StreamEvent(text=ev.text, completion_tokens=ev.completion_tokens)
                    continue
                eval_s = (ev.total_s - ev.first_token_s) if ev.total_s and ev.first_token_s else None
                speed = rate(ev.completion_tokens - 1, eval_s) if ev.completion_tokens > 1 else None
                yield StreamEvent(done=True, finish_reason=ev.finish_reason,
                                  prompt_tokens=ev.prompt_tokens,
                                  completion_tokens=ev.completion_tokens,
                                  first_token_s=ev.first_token_s, total_s=ev.total_s,
                                  tokens_per_s=speed or rate(ev.completion_tokens, ev.total_s))

    @contextlib.contextmanager
    def _naming_the_adapter(self) -> Iterator[None]:
        """A crash with a LoRA adapter applied says which adapter: llama.cpp may have refused
        it after the header checks passed (core.models.lora), and this build then crashes at
        the first token instead of saying so."""
        try:
            yield
        except EngineCrashed as exc:
            if not self.lora_path or exc.hint:
                raise
            exc.hint = (f"The model ran with the LoRA adapter {self.lora_path}, which llama.cpp "
                        "may have refused; try the base model without it.")
            raise

    def cancel(self) -> None:
        """Stop this backend's own request (a load or a stream) at once; another chat on the
        same model is not touched."""
        token = self._token
        if token is not None:
            token.cancel()
