"""Answers in OpenAI's shapes: a chat turn's events folded into a completion or its stream
chunks (``Answer``), and the error body a typed Corral error (or anything else) becomes, with
a status and never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from core.chat.session import ChatEvent
from core.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    Cancelled,
    ContextOverflow,
    CorralError,
    EngineCrashed,
    FeatureUnavailable,
    KnowledgeBaseNotFound,
    ModelFileDamaged,
    ModelNotFound,
    StoreError,
    StoreLocked,
)
from core.serve.chat import ChatPlan
from core.serve.shapes import ApiError

log = logging.getLogger("corral.serve")

#: typed errors -> (HTTP status, OpenAI error type, code); the first match wins
_STATUS: tuple[tuple[type[CorralError], int, str, str], ...] = (
    (ModelNotFound, 404, "invalid_request_error", "model_not_found"),
    (KnowledgeBaseNotFound, 404, "invalid_request_error", "kb_not_found"),
    (StoreLocked, 503, "server_error", "store_locked"),
    (StoreError, 503, "server_error", "store_error"),
    (BackendUnavailable, 503, "server_error", "backend_unavailable"),
    (BackendTimeout, 504, "server_error", "backend_timeout"),
    (ContextOverflow, 400, "invalid_request_error", "context_length_exceeded"),
    (EngineCrashed, 503, "server_error", "engine_crashed"),
    (ModelFileDamaged, 422, "invalid_request_error", "model_damaged"),
    (FeatureUnavailable, 503, "server_error", "unavailable"),
    (Cancelled, 503, "server_error", "cancelled"),
)


def as_api_error(exc: BaseException) -> ApiError:
    """The API's error for ``exc``: typed errors keep their sentence (message and hint),
    anything else is logged with its traceback and answered in one neutral line."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, CorralError):
        if isinstance(exc, BackendError) and not isinstance(exc, BackendTimeout):
            if exc.status == 404:
                return ApiError(404, exc.sentence(), param="model", code="model_not_found")
            return ApiError(502, exc.sentence(), type="server_error", code="backend_error")
        for kind, status, type_, code in _STATUS:
            if isinstance(exc, kind):
                param = "model" if code == "model_not_found" else None
                return ApiError(status, exc.sentence(), type=type_, param=param, code=code)
        return ApiError(400, exc.sentence())
    log.error("unexpected error in the API", exc_info=exc)
    return ApiError(500, "Corral hit an unexpected error; its log has the details.",
                    type="server_error", code="internal_error")


class Answer:
    """Folds a turn's events into what OpenAI's shapes need; ``feed`` returns the text to
    send now (with a guard that holds answers, nothing until the answer has passed)."""

    def __init__(self, plan: ChatPlan, hold: bool) -> None:
        self.plan = plan
        self.hold = hold
        self.parts: list[str] = []
        self.verdicts: list[dict[str, Any]] = []
        self.citations: list[dict[str, Any]] = []
        self.blocked = ""  #: 'input' or 'output' when the guard blocked that side
        self.message: Any = None
        self.conversation_id: int | None = None

    def feed(self, ev: ChatEvent) -> str:
        if ev.kind == "started":
            self.citations = list(ev.citations)
        elif ev.kind == "verdict":
            self.verdicts.append({**(ev.verdict or {}), "direction": ev.direction})
        elif ev.kind == "blocked":
            self.blocked = "input"
        elif ev.kind == "delta" and ev.text:
            self.parts.append(ev.text)
            return ev.text
        elif ev.kind == "finished" and ev.message is not None:
            self.message = ev.message
            self.conversation_id = ev.message.conversation_id
            if (ev.message.verdict or {}).get("action") == "block":
                self.blocked = "output"
            elif self.hold and not self.parts:
                self.parts.append(ev.message.content)
                return str(ev.message.content)
        return ""

    @property
    def text(self) -> str | None:
        return None if self.blocked else "".join(self.parts)

    @property
    def finish_reason(self) -> str:
        if self.blocked:
            return "content_filter"
        reason = getattr(self.message, "finish_reason", None)
        return "length" if reason == "length" else "stop"

    def usage(self) -> dict[str, int]:
        msg = self.message
        prompt = int(getattr(msg, "prompt_tokens", 0) or 0)
        completion = int(getattr(msg, "completion_tokens", 0) or 0)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def corral(self, *, history: bool) -> dict[str, Any]:
        """The ``corral`` field: the verdict that decided (blocked or warned, else the last),
        every verdict, the citations of a grounded answer, where history keeps it."""
        deciding = next((v for v in self.verdicts if v.get("action") == "block"), None) or \
            next((v for v in self.verdicts if v.get("action") == "warn"), None) or \
            (self.verdicts[-1] if self.verdicts else None)
        out: dict[str, Any] = {"verdict": deciding, "verdicts": self.verdicts,
                               "blocked": self.blocked or None}
        if self.plan.kb:
            out["kb"] = self.plan.kb
            out["citations"] = self.citations
        warning = getattr(self.message, "warning", "")
        if warning:
            out["warning"] = warning
        if history:
            out["conversation_id"] = self.conversation_id
        return out


def completion(answer: Answer, cid: str, created: int, *, history: bool) -> dict[str, Any]:
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": answer.plan.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                     "finish_reason": answer.finish_reason, "logprobs": None}],
        "usage": answer.usage(), "corral": answer.corral(history=history),
    }


def chunk(answer: Answer, cid: str, created: int, delta: dict[str, Any],
          finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created,
            "model": answer.plan.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                         "logprobs": None}], **extra}


def usage_chunk(answer: Answer, cid: str, created: int) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created,
            "model": answer.plan.model, "choices": [], "usage": answer.usage()}
