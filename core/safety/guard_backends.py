"""The two ways a guard model runs: in the llama.cpp engine child (exact token ids) and through
an Ollama server. Each reads the guard's whole answer, greedily, up to its end of turn or
MAX_ANSWER_TOKENS, within a time limit; what it read is judged by the strict parser."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from core.errors import CorralError, PromptFormatError
from core.prompts.base import RenderedPrompt
from core.prompts.guard import (
    GuardVersion,
    conversation_turns,
    guard_token_ids,
    ollama_messages,
    ollama_template,
    render_guard,
)

log = logging.getLogger("corral.safety")

#: The longest answer read. A verdict needs a few tokens ("unsafe\nS1,S10,S14" is under 12 in
#: any Llama vocabulary); a guard still talking after this many is not understood.
MAX_ANSWER_TOKENS = 32


class GuardTimeout(CorralError):
    """The guard model did not finish its answer within the guard's time limit."""

    def __init__(self, seconds: float, *, partial: str = "") -> None:
        super().__init__(f"the guard did not answer within {seconds:g} s",
                         hint="Send again, or raise the guard's time limit on the Safety page.")
        self.partial = partial


@dataclass
class GuardAnswer:
    raw: str
    probability: float | None = None


class GuardBackend(Protocol):
    """Runs one guard model: prompt in, the model's whole answer out."""

    description: str

    def answer(self, prompt: RenderedPrompt, messages: Sequence[Mapping[str, str]],
               check: str) -> GuardAnswer: ...


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

    def _probability(self, ids: list[int], cancel: Any) -> float | None:
        """P(first answer token is 'unsafe'), shown beside the verdict; never decides it."""
        safe_ids, unsafe_ids = self._first_token_ids()
        if not safe_ids or not unsafe_ids:
            return None
        try:
            probs = self.engine.next_token_probs(ids, safe_ids + unsafe_ids, cancel=cancel)
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
               check: str) -> GuardAnswer:
        from core.models.engine import CancelToken

        ids = self._fit(prompt, messages, check)  # loads the model first: not timed
        ends = self._end_ids()
        token = CancelToken()
        timer = threading.Timer(self.timeout_s, token.cancel)
        timer.daemon = True
        timer.start()
        text, finish = "", None
        try:
            # The probability first: the generation after it reuses llama.cpp's cache of the
            # same prompt instead of evaluating it twice.
            lead = self._lead_ids()
            probability = self._probability(ids + lead, token)
            for event in self.engine.generate(ids, max_tokens=MAX_ANSWER_TOKENS,
                                              temperature=0.0, top_k=1, top_p=1.0,
                                              repeat_penalty=1.0, seed=0, stop_ids=ends,
                                              cancel=token):
                if event.done:
                    finish = event.finish_reason
                else:
                    text += event.text
        finally:
            timer.cancel()
        if finish == "cancelled":
            if token.cancelled:
                raise GuardTimeout(self.timeout_s, partial=text)
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

    def answer(self, prompt: RenderedPrompt, messages: Sequence[Mapping[str, str]],
               check: str) -> GuardAnswer:
        # logprobs: newer servers send them (older ones ignore the fields).
        extra: dict[str, Any] = {"keep_alive": self.keep_alive, "logprobs": True,
                                 "top_logprobs": 5}
        if self.mode == "template":
            model = self.ensure_template()
            chunks = self.client.chat(model, ollama_messages(messages, check),
                                      options=self.OPTIONS, **extra)
        else:
            assert prompt.raw is not None
            chunks = self.client.generate_raw(self.model, prompt.raw, options=self.OPTIONS,
                                              **extra)
        text = ""
        logprobs: list[Any] = []
        for chunk in chunks:
            text += chunk.text
            logprobs.extend(getattr(chunk, "logprobs", None) or [])
        return GuardAnswer(text, _logprob_probability(logprobs) if logprobs else None)
