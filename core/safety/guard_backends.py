"""The two ways a guard model runs: in the llama.cpp engine child (exact token ids) and through
an Ollama server. Each reads the guard's whole answer, greedily, up to its end of turn or
MAX_ANSWER_TOKENS, within a time limit; what it read is judged by the strict parser.

A check can be stopped from another thread (the chat's Stop) with its ``CheckCancel``: the
engine child aborts the request, the Ollama stream is cut, and ``answer`` raises
``CheckStopped``, which the guard turns into a verdict that says the check did not finish."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.errors import Cancelled, CheckStopped, CorralError, GuardTimeout, PromptFormatError
from core.prompts.base import RenderedPrompt
from core.prompts.guard import (
    GuardVersion,
    conversation_turns,
    guard_token_ids,
    ollama_messages,
    ollama_template,
    render_guard,
)

if TYPE_CHECKING:
    from core.models.engine import CancelToken

log = logging.getLogger("corral.safety")

#: The longest answer read. A verdict needs a few tokens ("unsafe\nS1,S10,S14" is under 12 in
#: any Llama vocabulary); a guard still talking after this many is not understood.
MAX_ANSWER_TOKENS = 32


class CheckCancel:
    """Stops one guard check from any thread: ``cancel()`` runs the hooks the running backend
    registered (abort the engine request, cut the Ollama stream). One token per check; a
    token cancelled before its check starts stops it at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._hooks: list[Callable[[], object]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    def on_cancel(self, hook: Callable[[], object]) -> Callable[[], None]:
        """Run ``hook`` when cancelled (now, if it already is); returns what unregisters it."""
        with self._lock:
            run_now = self._cancelled
            if not run_now:
                self._hooks.append(hook)
        if run_now:
            hook()

        def forget() -> None:
            with self._lock:
                if hook in self._hooks:
                    self._hooks.remove(hook)

        return forget


@dataclass
class GuardAnswer:
    raw: str
    probability: float | None = None


class GuardBackend(Protocol):
    """Runs one guard model: prompt in, the model's whole answer out. ``cancel`` stops it
    (it then raises CheckStopped)."""

    description: str

    def answer(self, prompt: RenderedPrompt, messages: Sequence[Mapping[str, str]],
               check: str, *, cancel: CheckCancel | None = None) -> GuardAnswer: ...


# --- llama.cpp ------------------------------------------------------------------------------


class EngineGuardBackend:
    """The guard model in the llama.cpp engine child, fed the exact prompt as token ids."""

    def __init__(self, path: str | Path, version: GuardVersion, *, n_ctx: int = 4096,
                 n_threads: int | None = None, n_gpu_layers: int = 0,
                 timeout_s: float = 120.0) -> None:
        from core.models.pool import engine_pool

        self.version = version
        self.timeout_s = timeout_s
        self.engine = engine_pool().engine(path, role="guard", n_ctx=n_ctx, n_threads=n_threads,
                                           n_gpu_layers=n_gpu_layers)
        self.description = f"{Path(path).name} (llama.cpp)"
        self._candidates: tuple[list[int], list[int]] | None = None

    def token_ids(self, prompt: RenderedPrompt) -> list[int]:
        info = self.engine.load()
        return guard_token_ids(prompt, self.engine, int(info["bos"]))

    def _first_token_ids(self) -> tuple[list[int], list[int]]:
        """Ids of the first token of 'safe' and of 'unsafe' in this model's own vocabulary
        (with and without a leading space), excluding ids both words could start with."""
        if self._candidates is None:
            found: dict[str, set[int]] = {"safe": set(), "unsafe": set()}
            for word in found:
                for variant in (word, " " + word):
                    ids = self.engine.tokenize(variant, add_bos=False, special=False)
                    if not ids:
                        continue
                    piece = self.engine.token_pieces(ids[:1])[0].decode("utf-8", "replace")
                    if piece.strip() and word.startswith(piece.strip()):
                        found[word].add(ids[0])
            both = found["safe"] & found["unsafe"]
            self._candidates = (sorted(found["safe"] - both), sorted(found["unsafe"] - both))
        return self._candidates

    def _probability(self, ids: list[int], cancel: CancelToken) -> float | None:
        """P(first answer token is 'unsafe'), shown beside the verdict; never decides it."""
        safe_ids, unsafe_ids = self._first_token_ids()
        if not safe_ids or not unsafe_ids:
            return None
        try:
            probs = self.engine.next_token_probs(ids, safe_ids + unsafe_ids, cancel=cancel)
        except Cancelled:
            raise  # stopped, or past the time limit: the caller says which
        except CorralError as exc:  # the verdict does not depend on it
            log.warning("no unsafe probability from the guard: %s", exc)
            return None
        return float(sum(probs.get(i, 0.0) for i in unsafe_ids))

    def _lead_ids(self) -> list[int]:
        """Llama Guard 3 answers after a blank line ("\\n\\n", one token); 1 and 2 at once."""
        if not self.version.llama3_wrapper:
            return []
        ids = self.engine.tokenize("\n\n", add_bos=False, special=False)
        return ids if self.engine.detokenize(ids) == b"\n\n" else []

    def _end_ids(self) -> list[int]:
        """End-of-turn ids (EOS; <|eot_id|> for Llama Guard 3), in case the file does not mark
        them as end of generation."""
        ends = [int(self.engine.load()["eos"])]
        if self.version.llama3_wrapper:
            eot = self.engine.tokenize("<|eot_id|>", add_bos=False, special=True)
            if len(eot) == 1:
                ends += eot
        return ends

    def _fit(self, prompt: RenderedPrompt, messages: Sequence[Mapping[str, str]],
             check: str) -> list[int]:
        ids = self.token_ids(prompt)
        n_ctx = int(self.engine.load().get("n_ctx") or 0)
        turns, _ = conversation_turns(messages, check)
        keep = 1 if check == "user" else 2
        while n_ctx and len(ids) + MAX_ANSWER_TOKENS > n_ctx and len(turns) > keep:
            # A long chat: the guard judges the last turns that fit, oldest exchanges first out.
            turns = turns[2:]
            ids = self.token_ids(render_guard([m.to_dict() for m in turns], self.version, check))
        if n_ctx and len(ids) + MAX_ANSWER_TOKENS > n_ctx:
            raise PromptFormatError(
                f"the guard prompt needs {len(ids) + MAX_ANSWER_TOKENS} tokens but the guard "
                f"model's context holds {n_ctx}",
                hint="Raise the context length in Settings (llama.cpp engine).")
        return ids

    def answer(self, prompt: RenderedPrompt, messages: Sequence[Mapping[str, str]],
               check: str, *, cancel: CheckCancel | None = None) -> GuardAnswer:
        from core.models.engine import CancelToken

        # One engine token for the load, the probability and the answer: the time limit and
        # a Stop (``cancel``) both cancel it; which of them did is known by ``expired``.
        token = CancelToken()
        stop = cancel or CheckCancel()
        forget = stop.on_cancel(token.cancel)
        try:
            try:
                self.engine.load(cancel=token)  # not timed: a big guard loads for a while
            except Cancelled:
                if stop.cancelled:
                    raise CheckStopped() from None
                raise
            return self._answer(prompt, messages, check, token, stop)
        finally:
            forget()

    def _answer(self, prompt: RenderedPrompt, messages: Sequence[Mapping[str, str]],
                check: str, token: CancelToken, stop: CheckCancel) -> GuardAnswer:
        ids = self._fit(prompt, messages, check)
        ends = self._end_ids()
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            token.cancel()

        timer = threading.Timer(self.timeout_s, expire)
        timer.daemon = True
        timer.start()
        text, finish = "", None
        lead: list[int] = []
        probability = None
        try:
            lead = self._lead_ids()
            for event in self.engine.generate(ids, max_tokens=MAX_ANSWER_TOKENS,
                                              temperature=0.0, top_k=1, top_p=1.0,
                                              repeat_penalty=1.0, seed=0, stop_ids=ends,
                                              cancel=token):
                if event.done:
                    finish = event.finish_reason
                else:
                    text += event.text
            # The probability after the answer: it reuses llama.cpp's cache of the prompt and
            # the answer's first tokens, so the prompt is read once.
            if finish != "cancelled":
                probability = self._probability(ids + lead, token)
        except Cancelled:
            finish = "cancelled"
        finally:
            timer.cancel()
        if finish == "cancelled":
            if expired.is_set():
                raise GuardTimeout(self.timeout_s, partial=text)
            if stop.cancelled:
                raise CheckStopped(partial=text)
            raise CorralError("the guard's check was stopped before it answered")
        expected_lead = "\n\n" if lead else ""
        if text[: len(text) - len(text.lstrip())].rstrip(" ") != expected_lead:
            probability = None  # the answer did not start where the probability was read
        return GuardAnswer(text, probability)


# --- Ollama -----------------------------------------------------------------------------------


def _logprob_probability(chunks_logprobs: list[Any]) -> float | None:
    """P(unsafe) from Ollama logprobs of the first non-blank answer token, when present."""
    for entry in chunks_logprobs:
        token = str(_get(entry, "token", "") or "")
        if not token.strip():
            continue
        tops = _get(entry, "top_logprobs", None) or [entry]
        total = {"safe": 0.0, "unsafe": 0.0}
        for top in tops:
            word = str(_get(top, "token", "") or "").strip()
            lp = _get(top, "logprob", None)
            if lp is None or not word:
                continue
            for label in ("unsafe", "safe"):
                if label.startswith(word) and not (label == "safe" and "unsafe".startswith(word)):
                    total[label] += math.exp(float(lp))
                    break
        return total["unsafe"] if total["safe"] or total["unsafe"] else None
    return None


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


class OllamaGuardBackend:
    """The guard model through an Ollama server: raw mode with the exact prompt (any version),
    or plain messages to a copy of ``llama-guard3`` registered with the corrected template.
    The client's read timeout is the guard's time limit."""

    OPTIONS: Mapping[str, Any] = {"temperature": 0, "top_k": 1, "num_predict": MAX_ANSWER_TOKENS}

    def __init__(self, client: Any, model: str, version: GuardVersion, *, mode: str = "raw",
                 keep_alive: str = "30m") -> None:
        self.client = client
        self.model = model
        self.version = version
        self.mode = "template" if mode == "template" and version.llama3_wrapper else "raw"
        self.keep_alive = keep_alive
        self.description = f"{model} (Ollama, {self.mode})"
        self._fixed: str | None = None
        self._threads = threading.local()

    def fixed_model_name(self) -> str:
        repo, _, tag = self.model.rpartition(":") if ":" in self.model else (self.model, "", "")
        return f"{repo or self.model}-corral-fixed:{tag or 'latest'}"

    def ensure_template(self) -> str:
        """Register the corrected template once (a copy of the model under another name)."""
        if self._fixed is None:
            name = self.fixed_model_name()
            have = {getattr(m, "name", "") for m in self.client.list()}
            if name not in have:
                self.client.create(name, self.model, template=ollama_template(self.version),
                                   parameters={"temperature": 0})
            self._fixed = name
        return self._fixed

    def _own_client(self) -> Any:
        """This thread's client, for stoppable checks: a Stop cuts the streams of one client,
        so it cuts this check's and no other's (the guard is shared: a passage check may run
        beside a turn's). A thread runs one check at a time."""
        from core.models.ollama_client import OllamaClient

        c = self.client
        if not isinstance(c, OllamaClient):
            return c
        own = getattr(self._threads, "client", None)
        if own is None:
            own = self._threads.client = OllamaClient(c.host, c.connect_timeout,
                                                      c.read_timeout)
        return own

    def answer(self, prompt: RenderedPrompt, messages: Sequence[Mapping[str, str]],
               check: str, *, cancel: CheckCancel | None = None) -> GuardAnswer:
        if cancel is not None and cancel.cancelled:
            raise CheckStopped()
        # logprobs: newer servers send them (older ones ignore the fields).
        extra: dict[str, Any] = {"keep_alive": self.keep_alive, "logprobs": True,
                                 "top_logprobs": 5}
        model = self.ensure_template() if self.mode == "template" else self.model
        client = self._own_client() if cancel is not None else self.client
        forget = cancel.on_cancel(client.cancel) if cancel is not None else None
        text = ""
        logprobs: list[Any] = []
        try:
            if self.mode == "template":
                chunks = client.chat(model, ollama_messages(messages, check),
                                     options=self.OPTIONS, **extra)
            else:
                assert prompt.raw is not None
                chunks = client.generate_raw(self.model, prompt.raw, options=self.OPTIONS,
                                             **extra)
            for chunk in chunks:
                text += chunk.text
                logprobs.extend(getattr(chunk, "logprobs", None) or [])
        except CorralError as exc:
            if cancel is not None and cancel.cancelled:  # the cut stream ends as it can
                raise CheckStopped(partial=text) from exc
            raise
        finally:
            if forget is not None:
                forget()
        return GuardAnswer(text, _logprob_probability(logprobs) if logprobs else None)
