"""OpenAI's shapes: the requests the API accepts (validated with pydantic) and the error body
every failure answers with, ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: limits that keep one request from taking the machine
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_COMPLETION_TOKENS = 8192
MAX_MESSAGES = 1000
MAX_STOP = 8
MAX_EMBED_INPUTS = 2048
MAX_SEARCH_RESULTS = 50

T = TypeVar("T", bound=BaseModel)


class ApiError(Exception):
    """A failure with its HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",  # noqa: A002
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Shape):
    type: str
    text: str | None = None


class MessageIn(_Shape):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text; parts other than text are refused (no images or audio)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        texts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise ApiError(400, f"message parts of type '{part.type}' are not supported: "
                                    "Corral's models read text only", param="messages",
                               code="unsupported_content")
            texts.append(part.text)
        return "".join(texts)


class StreamOptions(_Shape):
    include_usage: bool = False


class CorralChatOptions(_Shape):
    """The ``corral`` extension of a chat request."""

    kb: str | None = Field(None, min_length=1, max_length=200)


_Tokens = Field(None, ge=1, le=MAX_COMPLETION_TOKENS)


class ChatRequest(_Shape):
    model: str = Field(min_length=1, max_length=4096)
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = _Tokens
    max_completion_tokens: int | None = _Tokens
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**32)
    n: int | None = None
    tools: list[Any] | None = None
    corral: CorralChatOptions | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ApiError(400, f"stop takes up to {MAX_STOP} non-empty strings", param="stop")
        return stops

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def check(self) -> ChatRequest:
        if self.n not in (None, 1):
            raise ApiError(400, "n must be 1: Corral gives one answer per request", param="n")
        if self.tools:
            raise ApiError(400, "tools are not supported by Corral's API", param="tools",
                           code="unsupported_parameter")
        self.stops()
        return self


class EmbeddingRequest(_Shape):
    model: str = Field(min_length=1, max_length=4096)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts or len(texts) > MAX_EMBED_INPUTS:
            raise ApiError(400, f"input takes 1 to {MAX_EMBED_INPUTS} strings", param="input")
        return texts


class ModerationRequest(_Shape):
    input: str | list[str]
    model: str | None = Field(None, max_length=4096)

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts or len(texts) > MAX_MESSAGES:
            raise ApiError(400, f"input takes 1 to {MAX_MESSAGES} strings", param="input")
        return texts


class RankingOptions(_Shape):
    score_threshold: float = Field(0.0, ge=-1.0, le=1.0)


class SearchRequest(_Shape):
    query: str | list[str]
    max_num_results: int = Field(10, ge=1, le=MAX_SEARCH_RESULTS)
    ranking_options: RankingOptions | None = None
    filters: dict[str, Any] | None = None

    def text(self) -> str:
        text = self.query if isinstance(self.query, str) else " ".join(self.query)
        if not text.strip():
            raise ApiError(400, "query is empty", param="query")
        if self.filters:
            raise ApiError(400, "filters are not supported: Corral's chunks carry no "
                                "attributes", param="filters", code="unsupported_parameter")
        return text


def parse(shape: type[T], body: Any) -> T:
    """The request as ``shape``, or a 400 ApiError naming the first bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return shape.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ApiError(400, f"{where or 'body'}: {first.get('msg', 'invalid')}",
                       param=where or None) from None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
