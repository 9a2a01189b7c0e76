"""GuardService: checks a conversation with a Llama Guard model (through Ollama or the llama.cpp
engine child) and returns a GuardVerdict the chat flow, the CLI and the audit log use."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.errors import CorralError, PromptFormatError
from core.prompts.base import RenderedPrompt
from core.prompts.guard import (
    GuardVersion,
    conversation_turns,
    guard_token_ids,
    guard_version,
    ollama_messages,
    ollama_template,
    render_guard,
)
from core.safety.verdict import Direction, GuardVerdict

if TYPE_CHECKING:
    from core.config import Settings
    from core.safety.audit import AuditLog

log = logging.getLogger("corral.safety")

#: A verdict needs a few tokens ("unsafe\nS1,S10,S14" is under 12 in any Llama vocabulary).
MAX_ANSWER_TOKENS = 20


@dataclass
class GuardAnswer:
    raw: str
    probability: float | None = None


class GuardBackend(Protocol):
    """Runs one guard model: prompt in, the model's answer out."""

    description: str

    def answer(self, prompt: RenderedPrompt, messages: Sequence[Mapping[str, str]],
               check: str) -> GuardAnswer: ...


def answer_settled(text: str) -> bool:
    """True once the verdict can be read: the answer is exactly 'safe', its codes line is
    complete, or it is already something else. Guards end here with an end-of-turn token; a
    model that goes on after it is not waited for (the strict parser judges what was read)."""
    body = text.lstrip()
    if not body:
        return False
    if body == "safe":
        return True
    if body.startswith("unsafe\n"):
        return "\n" in body[len("unsafe\n"):].lstrip(" ")
    return not ("safe".startswith(body) or "unsafe\n".startswith(body))


# --- llama.cpp ------------------------------------------------------------------------------


class EngineGuardBackend:
    """The guard model in the llama.cpp engine child, fed the exact prompt as token ids."""

    def __init__(self, path: str | Path, version: GuardVersion, *, n_ctx: int = 4096,
                 n_threads: int | None = None, n_gpu_layers: int = 0) -> None:
        from core.models.pool import engine_pool

        self.version = version
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

    def _probability(self, ids: list[int]) -> float | None:
        safe_ids, unsafe_ids = self._first_token_ids()
        if not safe_ids or not unsafe_ids:
            return None
        try:
            probs = self.engine.next_token_probs(ids, safe_ids + unsafe_ids)
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

    def answer(self, prompt: RenderedPrompt, messages: Sequence[Mapping[str, str]],
               check: str) -> GuardAnswer:
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
                f"model's context holds {n_ctx}"
            )
        # The first-token probability is computed first: the generation after it reuses
        # llama.cpp's cache of the same prompt instead of evaluating it twice.
        lead = self._lead_ids()
        probability = None
        if n_ctx == 0 or len(ids) + len(lead) < n_ctx:
            probability = self._probability(ids + lead)
        text = ""
        stream = self.engine.generate(ids, max_tokens=MAX_ANSWER_TOKENS, temperature=0.0,
                                      top_k=1, top_p=1.0, repeat_penalty=1.0, seed=0)
        try:
            for event in stream:
                if event.done:
                    continue  # the stream ends by itself after its closing event
                text += event.text
                if answer_settled(text):
                    break  # closing the stream below cancels the rest
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        expected_lead = "\n\n" if lead else ""
        if text[: len(text) - len(text.lstrip())].rstrip(" ") != expected_lead:
            probability = None  # the answer did not start where the probability was read
        return GuardAnswer(text, probability)


# --- Ollama -----------------------------------------------------------------------------------


def _logprob_probability(chunks_logprobs: list[Any]) -> float | None:
    """P(unsafe) from Ollama logprobs of the first non-blank answer token, when present."""
    import math

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
    or plain messages to a copy of ``llama-guard3`` registered with the corrected template."""

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


# --- the service ------------------------------------------------------------------------------


class GuardService:
    """Checks conversations with one guard model and one policy; records each check."""

    def __init__(
        self,
        guard_model: str,
        version: str = "llama-guard-3",
        *,
        policy: Mapping[str, str] | None = None,
        fail_closed: bool = True,
        settings: Settings,
        backend: GuardBackend | None = None,
        audit: AuditLog | bool = True,
        ollama_mode: str = "raw",
        check_inputs: bool = True,
        check_outputs: bool = True,
    ) -> None:
        self.guard_model = guard_model
        self.check_inputs = check_inputs
        self.check_outputs = check_outputs
        self.version = guard_version(version)
        self.policy = dict(policy or {})
        self.fail_closed = fail_closed
        self._settings = settings
        self._backend = backend
        self.ollama_mode = ollama_mode
        if audit is True:
            from core.safety.audit import AuditLog

            self.audit: AuditLog | None = AuditLog()
        else:
            self.audit = audit or None

    @classmethod
    def from_settings(cls, settings: Settings, *, audit: AuditLog | bool = True) -> GuardService:
        s = settings.safety
        if not s.guard_model.strip():
            raise CorralError("no guard model is chosen", hint="Choose one on the Safety page.")
        return cls(s.guard_model, s.guard_version, policy=s.policy, fail_closed=s.fail_closed,
                   settings=settings, audit=audit if s.audit else False,
                   ollama_mode=s.ollama_mode, check_inputs=s.check_input,
                   check_outputs=s.check_output)

    @property
    def backend(self) -> GuardBackend:
        """The runner, made on first use (resolving the model reference, starting nothing)."""
        if self._backend is None:
            from core.models.refs import resolve

            settings = self._settings
            resolved = resolve(self.guard_model, settings)
            if resolved.adapter is not None:  # never check with the base model instead
                raise CorralError(f"the guard model {self.guard_model} has a LoRA adapter, "
                                  "which the guard cannot apply",
                                  hint="Use it as ollama:NAME, or pick another guard model.")
            if resolved.kind == "ollama":
                from core.models.ollama_client import OllamaClient

                client = OllamaClient(resolved.host, settings.ollama.connect_timeout,
                                      settings.ollama.read_timeout)
                self._backend = OllamaGuardBackend(client, resolved.name, self.version,
                                                   mode=self.ollama_mode)
            else:
                assert resolved.path is not None
                self._backend = EngineGuardBackend(
                    resolved.path, self.version, n_ctx=max(settings.engine.n_ctx, 2048),
                    n_threads=settings.engine.n_threads or None,
                    n_gpu_layers=settings.engine.n_gpu_layers,
                )
        return self._backend

    def render(self, messages: Iterable[Mapping[str, str]], check: str | None = None) -> str:
        return render_guard(messages, self.version, check).text

    def check(
        self,
        messages: Iterable[Mapping[str, str]],
        check: str | None = None,
        *,
        direction: Direction | None = None,
        conversation_id: str = "",
        raise_errors: bool = False,
    ) -> GuardVerdict:
        """Classify the last message of ``messages``. With ``raise_errors`` False a guard that
        cannot run gives an 'unknown' verdict that says why (and the policy decides)."""
        msgs = [dict(m) for m in messages]
        started = time.perf_counter()
        try:
            _, role = conversation_turns(msgs, check)
            direction = direction or ("input" if role == "user" else "output")
            prompt = render_guard(msgs, self.version, role)
            answer = self.backend.answer(prompt, msgs, role)
        except Exception as exc:  # fail by the policy, never by crashing the chat turn
            if raise_errors:
                raise
            if not isinstance(exc, CorralError):
                log.exception("unexpected error in a guard check")
                exc = CorralError(f"{type(exc).__name__}: {exc}")
            log.warning("guard check failed: %s", exc)
            verdict = GuardVerdict(
                "unknown", raw="", guard_model=self.guard_model, version=self.version.key,
                direction=direction or "input", reason=f"the guard could not run: {exc.sentence()}",
                action="block" if self.fail_closed else "warn",
                elapsed_s=time.perf_counter() - started,
            )
        else:
            verdict = GuardVerdict.from_answer(
                answer.raw, version=self.version.key, policy=self.policy,
                fail_closed=self.fail_closed, guard_model=self.guard_model,
                direction=direction, probability=answer.probability,
                elapsed_s=time.perf_counter() - started,
            )
        if self.audit is not None:
            try:
                self.audit.record(verdict, conversation_id)
            except CorralError as exc:  # the check itself stands; the log says why
                log.warning("could not record the guard check: %s", exc)
        return verdict

    def check_input(self, messages: Iterable[Mapping[str, str]], *,
                    conversation_id: str = "") -> GuardVerdict:
        """The user's latest message, before the chat model sees it."""
        if not self.check_inputs:
            return self._skipped("input", "checks of your messages are off")
        msgs = _until_last_user(messages)
        return self.check(msgs, "user", direction="input", conversation_id=conversation_id)

    def check_output(self, messages: Iterable[Mapping[str, str]], *,
                     conversation_id: str = "") -> GuardVerdict:
        """The complete answer (the last assistant message) in its conversation."""
        if not self.check_outputs:
            return self._skipped("output", "checks of answers are off")
        return self.check(messages, "agent", direction="output", conversation_id=conversation_id)

    def check_documents(self, chunks: Iterable[str], *,
                        conversation_id: str = "") -> list[GuardVerdict]:
        """Retrieved passages, each judged as if a user had written it, before a prompt."""
        return [
            self.check([{"role": "user", "content": text}], "user", direction="document",
                       conversation_id=conversation_id)
            for text in chunks
        ]

    def _skipped(self, direction: Direction, why: str) -> GuardVerdict:
        return GuardVerdict("skipped", guard_model=self.guard_model, version=self.version.key,
                            direction=direction, reason=why, action="allow")


def guard_from_settings(settings: Settings, *, audit: AuditLog | bool = True
                        ) -> GuardService | None:
    """The chat's guard, or None when checks are off or no guard model is chosen."""
    s = settings.safety
    if not s.enabled or not s.guard_model.strip() or not (s.check_input or s.check_output
                                                           or s.check_documents):
        return None
    return GuardService.from_settings(settings, audit=audit)


def _until_last_user(messages: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    """The conversation up to and including the last user message (an input check must not
    see an answer to it)."""
    msgs = [dict(m) for m in messages]
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].get("role") == "user":
            return msgs[: i + 1]
    return msgs
