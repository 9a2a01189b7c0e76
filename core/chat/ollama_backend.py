"""A model served by Ollama: our formats through raw mode (the exact string), the ``model``
format through /api/chat and Ollama's own template.

Context: every request carries ``num_ctx`` (the user's length, else the default, capped at the
model's trained length), so Ollama never falls back to its own default. Counts come from the
model's own vocabulary when its GGUF blob is in Ollama's store on this machine (the very model
the server has: same manifest digest); otherwise they are estimates with a margin (see
``estimate_tokens``), and ``BackendInfo.exact_counts`` says so. After each answer the count
Ollama reports is checked: a prompt that Ollama cut gets a warning (see ``cut_warning``).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from core.chat.backends import BackendInfo, PreparedPrompt, StreamEvent, rate
from core.chat.params import GenerationParams
from core.errors import Cancelled, CorralError, StreamInterrupted
from core.prompts.base import Message, RenderedPrompt, TagPolicy
from core.prompts.formats import PromptTokenizer, pick_format, render

log = logging.getLogger(__name__)

MARGIN_RATIO = 0.10  #: estimates get 10% more ...
MARGIN_TOKENS = 16  #: ... and 16 tokens more
MESSAGE_OVERHEAD = 8  #: ``model`` format: tokens a chat template adds around each message
#: (ChatML and Llama 3 add 5, Llama 2's [INST] <<SYS>> markup up to 8)
CUT_SLACK = 2  #: a prompt Ollama read within this many tokens of num_ctx filled the context
FLOOR_SLACK = 4  #: tokenizing message by message may differ by a token or two at the seams

_PIECES = re.compile(r"[A-Za-z]+|[^\x00-\x7f]|.", re.DOTALL)


def estimate_tokens(text: str) -> int:
    """A conservative token count without the model's vocabulary, by kind of character:
    a run of ASCII letters one token per 3 letters, every digit, ASCII symbol, newline or tab
    one token (common vocabularies split digits one by one), a space half a token, and any
    other character 2/3 of a token per UTF-8 byte (2 for a CJK character: byte-level BPE
    vocabularies made for English need that many); then 10% and 16 tokens of margin. On
    SmolLM2's and Gemma 3's vocabularies this counts prose about twice, code and JSON 1.6 to
    2.3 times, digits 1.15 times and CJK 1.4 to 5 times what they are; only random base64
    (few merges) is undercounted, by up to a quarter."""
    n = 0.0
    for m in _PIECES.finditer(text):
        piece = m.group()
        if piece[0].isascii() and piece[0].isalpha():
            n += math.ceil(len(piece) / 3)
        elif not piece.isascii():
            n += len(piece.encode("utf-8")) * 2 / 3
        else:
            n += 0.5 if piece == " " else 1
    return math.ceil(n * (1 + MARGIN_RATIO)) + MARGIN_TOKENS


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _exact_count(counter: PromptTokenizer, rendered: RenderedPrompt) -> int:
    """Tokens Ollama's runner reads for the raw string: ours, plus the BOS it adds itself
    (when the model's tokenizer adds one) where the rendering leaves BOS to it."""
    ids = counter.ids(rendered)
    adds_bos = bool((getattr(counter.tok, "info", None) or {}).get("add_bos", True))
    return len(ids) + (1 if adds_bos and ids[:1] != [counter.bos] else 0)


def local_vocabulary(client: Any, model: str, store_dir: str) -> PromptTokenizer | None:
    """The vocabulary of ``model`` from its GGUF blob in Ollama's store on this machine, loaded
    vocabulary-only in an engine child; None when the store lacks the model or holds another
    model under that name (its manifest digest differs from the server's). Raises the
    client's error when the server cannot say which model it has (ask again later)."""
    from core.models.ollama_store import find_store
    from core.models.pool import engine_pool

    store = find_store(store_dir)
    if store is None:
        return None
    try:
        found = store.find(model)
    except CorralError:
        return None
    served = {m.name: m.digest for m in client.list()}
    if served.get(model) != found.manifest_digest:
        return None
    try:
        engine = engine_pool().engine(found.gguf_path(), role="vocab")
        return PromptTokenizer(engine, engine.load())
    except CorralError as exc:  # not a GGUF llama.cpp knows: counts stay estimates
        log.info("the vocabulary of %s could not be loaded: %s", model, exc)
        return None


class OllamaBackend:
    """A model served by Ollama. Our formats go through raw mode (the exact string, BOS left to
    the runner); the ``model`` format goes through /api/chat and Ollama's own template.

    ``counter``: the model's own vocabulary, if known; else, with ``store_dir`` (not None), it is
    looked up in Ollama's store on first use (``local_vocabulary``). ``default_ctx``: the
    context length when the user picked none (the engine setting).
    """

    def __init__(self, client: Any, model: str, *, counter: PromptTokenizer | None = None,
                 store_dir: str | None = None, default_ctx: int = 4096) -> None:
        self.client = client
        self.model = model
        self.counter = counter
        self.store_dir = store_dir
        self.default_ctx = default_ctx
        self._looked = counter is not None or store_dir is None
        self._lock = threading.Lock()
        self._show: Any = None
        self._whole_counts: bool | None = None
        self._cancel = threading.Event()

    def _details(self) -> Any:
        if self._show is None:
            self._show = self.client.show(self.model)
        return self._show

    def _vocabulary(self) -> PromptTokenizer | None:
        with self._lock:
            if not self._looked:
                try:
                    self.counter = local_vocabulary(self.client, self.model, self.store_dir or "")
                    self._looked = True
                except CorralError as exc:  # the server is away: estimate, look again later
                    log.info("cannot match %s with Ollama's store: %s", self.model, exc)
            return self.counter

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
        exact = fmt != "model" and self._vocabulary() is not None
        return BackendInfo("ollama", f"ollama:{self.model}", ctx, fmt, reason, bool(template),
                           {"family": family, "template": template}, exact_counts=exact)

    def prepare(self, messages: Sequence[Message], fmt: str, tags: TagPolicy) -> PreparedPrompt:
        if fmt == "model":
            chat = [m.to_dict() for m in messages]
            shown = "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages)
            return PreparedPrompt(None, chat_messages=chat, exact_text=shown)
        rendered = render(messages, fmt, tags=tags, for_ollama=True)
        counter = self._vocabulary()
        count = _exact_count(counter, rendered) if counter is not None else None
        assert rendered.raw is not None
        return PreparedPrompt(rendered, raw=rendered.raw, token_count=count,
                              exact_text=rendered.text)

    def use_context(self, requested: int) -> int:
        """The ``num_ctx`` every request carries: ``requested``, else the default, never past
        the model's trained length (from /api/show)."""
        wanted = requested or self.default_ctx
        trained = self.info().context_length
        return min(wanted, trained) if trained else wanted

    def count(self, messages: Sequence[Message], fmt: str, tags: TagPolicy) -> int:
        """Tokens of the prompt: exact with the model's vocabulary in our formats; for the
        ``model`` format (Ollama renders the template) the messages' tokens plus
        MESSAGE_OVERHEAD each and MARGIN_TOKENS; estimates (``estimate_tokens``) otherwise."""
        counter = self._vocabulary()
        if fmt != "model":
            rendered = render(messages, fmt, tags=tags, for_ollama=True)
            if counter is not None:
                return _exact_count(counter, rendered)
            return estimate_tokens(rendered.raw or rendered.text)
        texts = [m.content for m in messages]
        system = str(_get(self._details(), "system") or "")
        if system and not any(m.role == "system" for m in messages):
            texts.append(system)  # Ollama adds the Modelfile's SYSTEM when we send none
        overhead = MESSAGE_OVERHEAD * len(texts)
        if counter is not None:
            return self._tokens(counter, "\n".join(texts)) + overhead + MARGIN_TOKENS
        return estimate_tokens("".join(texts)) + overhead

    @staticmethod
    def _tokens(counter: PromptTokenizer, text: str) -> int:
        return len(counter.tok.tokenize(text, add_bos=False, special=False)) if text else 0

    def stream(self, prompt: PreparedPrompt, params: GenerationParams) -> Iterator[StreamEvent]:
        self._cancel.clear()
        options = params.ollama_options(prompt.stop)
        num_ctx = options["num_ctx"] = self.use_context(params.context_length)
        if prompt.chat_messages is not None:
            chunks = self.client.chat(self.model, prompt.chat_messages, options)
        else:
            assert prompt.raw is not None
            chunks = self.client.generate_raw(self.model, prompt.raw, options)
        started = time.perf_counter()
        first: float | None = None
        count = 0

        def stopped() -> StreamEvent:
            total = time.perf_counter() - started
            return StreamEvent(done=True, finish_reason="cancelled", completion_tokens=count,
                               first_token_s=first, total_s=total,
                               tokens_per_s=rate(count, total - (first or 0)))

        try:
            for chunk in chunks:
                if self._cancel.is_set():
                    yield stopped()
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
                    read = _get(chunk, "prompt_eval_count")
                    yield StreamEvent(done=True, finish_reason=_get(chunk, "done_reason") or "stop",
                                      prompt_tokens=read, completion_tokens=evals,
                                      first_token_s=first, total_s=total, tokens_per_s=speed,
                                      warning=self.cut_warning(prompt, read, num_ctx))
                    return
        except Cancelled:
            if not self._cancel.is_set():
                raise
            yield stopped()  # cancel() closed the connection: Ollama stops at once
            return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # drops the HTTP stream: Ollama stops generating
        raise StreamInterrupted("Ollama ended the answer without saying it was done")

    def cancel(self) -> None:
        """Stop the answer now, from any thread: the connection is closed, even while Ollama is
        still reading the prompt and nothing has come back yet."""
        self._cancel.set()
        stop = getattr(self.client, "cancel", None)
        if stop is not None:
            stop()

    # --- was the prompt cut? -----------------------------------------------------------

    def cut_warning(self, prompt: PreparedPrompt, read: Any, num_ctx: int) -> str | None:
        """A sentence when Ollama's ``prompt_eval_count`` (``read``) shows the prompt was cut.

        Since Ollama 0.4 the count is the whole prompt the runner kept, cached tokens
        included (``numPromptInputs`` is taken before the cache is consulted). Ollama cuts in
        two places: the runner keeps the first ``num_keep`` tokens and drops the start of a
        prompt longer than num_ctx (the count is then num_ctx), and /api/chat leaves out the
        oldest messages until the rest fits (the count is then below the messages' own
        tokens). So: warn when the count is within CUT_SLACK of num_ctx (a prompt that passed
        our check leaves room for the answer), or, when the model's vocabulary is known and the
        server is 0.4 or later, when the count is below what the prompt surely holds (the
        exact raw-mode count; for /api/chat the messages' own tokens) by more than
        FLOOR_SLACK. Without the vocabulary only the first rule applies; the estimate's margin
        keeps such prompts from reaching the limit.
        """
        if not isinstance(read, int) or isinstance(read, bool) or read <= 0:
            return None
        hint = "Choose a longer context, or drop the oldest turns."
        if read >= num_ctx - CUT_SLACK:
            return (f"Ollama cut the prompt to fit its context of {num_ctx} tokens, so the "
                    f"start of the conversation was lost. {hint}")
        try:
            floor = self._floor(prompt)
        except CorralError as exc:  # the vocabulary's engine failed: the answer stands
            log.info("could not check the prompt Ollama read: %s", exc)
            floor = None
        if floor is not None and read < floor:
            return (f"Ollama cut the prompt: the model read {read} tokens of a prompt that has "
                    f"at least {floor}, so part of the conversation was lost. {hint}")
        return None

    def _floor(self, prompt: PreparedPrompt) -> int | None:
        """Fewest tokens the prompt can have (less the slack), when the vocabulary says."""
        counter = self._vocabulary()
        if counter is None or not self._counts_whole_prompt():
            return None
        if prompt.chat_messages is None:
            return prompt.token_count - FLOOR_SLACK if prompt.token_count else None
        texts = [str(m.get("content") or "") for m in prompt.chat_messages]
        return self._tokens(counter, "\n".join(texts)) - FLOOR_SLACK - 2 * len(texts)

    def _counts_whole_prompt(self) -> bool:
        """Whether the server's prompt_eval_count includes cached tokens (Ollama 0.4+)."""
        if self._whole_counts is None:
            try:
                version = str(self.client.version())
            except (CorralError, AttributeError):
                version = ""
            parts = [int(p) for p in version.split("-")[0].split(".")[:2] if p.isdigit()]
            # dev builds say 0.0.0
            self._whole_counts = not (len(parts) == 2 and (0, 0) < tuple(parts) < (0, 4))
        return self._whole_counts

