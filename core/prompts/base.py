"""Shared pieces of every chat prompt format: messages, segments, rendered prompts, tag checks.

A rendered prompt has three faces: the display string (BOS/EOS written as text, exactly as the
spec vectors write it), the segments llama.cpp token ids are built from (special tokens by id,
user text tokenized with special-token parsing off), and the Ollama raw-mode string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import PromptFormatError

Role = Literal["system", "user", "assistant"]
TagPolicy = Literal["refuse", "defuse"]
SegmentKind = Literal["special", "text", "markup"]

#: Inserted after the first character of a control tag to defuse it (invisible, no width).
WORD_JOINER = "\u2060"


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Segment:
    """One piece of a prompt as the tokenizer must see it.

    ``special``: one special token, named by its text (``<s>``, ``</s>``, ``<step>``).
    ``text``: plain text tokenized with special-token parsing off, in its own tokenize call
    (that is how Meta's reference encodes each piece). ``dummy_prefix`` False means the
    reference encodes it without SentencePiece's leading-space prefix (Code Llama 70B); None
    means as the model's own tokenizer does on its own (the ``raw`` format).
    ``markup``: trusted template output, tokenized with special-token parsing on.
    ``display`` is how the piece appears in the display string.
    """

    kind: SegmentKind
    text: str
    display: str
    dummy_prefix: bool | None = True


@dataclass(frozen=True)
class RenderedPrompt:
    format: str
    text: str  #: display string: BOS/EOS as text, byte-exact with the spec vectors
    segments: tuple[Segment, ...]
    raw: str | None = None  #: Ollama raw-mode string (no leading BOS); None if not for Ollama
    stop: tuple[str, ...] = ()  #: stop strings the format needs besides EOS
    notes: tuple[str, ...] = field(default=())  #: what was changed (defused tags ...)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "prompt": self.text,
            "raw": self.raw,
            "segments": [
                {"kind": s.kind, "text": s.text, "display": s.display} for s in self.segments
            ],
            "stop": list(self.stop),
        }


def as_messages(items: Iterable[Any]) -> list[Message]:
    """Accept Message objects or {"role", "content"} mappings; reject anything else clearly."""
    out: list[Message] = []
    for i, item in enumerate(items):
        if isinstance(item, Message):
            out.append(item)
            continue
        if not isinstance(item, Mapping):
            raise PromptFormatError(f"message {i + 1} is not an object with role and content")
        role, content = item.get("role"), item.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise PromptFormatError(f"message {i + 1} needs a text 'role' and a text 'content'")
        out.append(Message(role, content))
    return out


def split_system(messages: Sequence[Message]) -> tuple[str | None, list[Message]]:
    """The leading system message (if any) and the rest, checked to alternate user/assistant
    and to end with a user message, as Meta's reference asserts."""
    if not messages:
        raise PromptFormatError("the conversation is empty: there is no message to answer")
    system: str | None = None
    rest = list(messages)
    if rest[0].role == "system":
        system, rest = rest[0].content, rest[1:]
    for i, msg in enumerate(rest):
        expected = "user" if i % 2 == 0 else "assistant"
        if msg.role not in ("system", "user", "assistant"):
            raise PromptFormatError(f"unknown role {msg.role!r}: use system, user or assistant")
        if msg.role == "system":
            raise PromptFormatError("only one system message is allowed, and only first")
        if msg.role != expected:
            raise PromptFormatError(
                "conversation roles must alternate user/assistant/user/assistant/...: "
                f"message {i + 1 + (system is not None)} is {msg.role!r}, expected {expected!r}"
            )
    if not rest or rest[-1].role != "user":
        raise PromptFormatError("the last message must be from the user")
    return system, rest


def _tag_pattern(tags: Iterable[str]) -> re.Pattern[str] | None:
    tags = sorted({t for t in tags if t}, key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in tags)) if tags else None


def defuse(text: str, tags: Iterable[str]) -> str:
    """Break every occurrence of a control tag with an invisible word joiner."""
    pattern = _tag_pattern(tags)
    if pattern is None:
        return text
    while True:
        new = pattern.sub(lambda m: m.group(0)[0] + WORD_JOINER + m.group(0)[1:], text)
        if new == text:
            return new
        text = new


def found_tags(text: str, tags: Iterable[str]) -> list[str]:
    pattern = _tag_pattern(tags)
    return sorted({m.group(0) for m in pattern.finditer(text)}) if pattern else []


def guard_tags(
    messages: Sequence[Message], tags: Sequence[str], policy: TagPolicy, format_name: str
) -> tuple[list[Message], tuple[str, ...]]:
    """Refuse (Meta's reference) or defuse the format's control tags inside message texts."""
    found: list[str] = []
    out: list[Message] = []
    for msg in messages:
        hits = found_tags(msg.content, tags)
        if hits:
            found.extend(h for h in hits if h not in found)
            msg = Message(msg.role, defuse(msg.content, tags))
        out.append(msg)
    if not found:
        return list(messages), ()
    listing = ", ".join(f"“{t}”" for t in found)
    if policy == "refuse":
        raise PromptFormatError(
            f"the conversation contains {listing}, which the {format_name} prompt format uses "
            "as a control tag; a message must not be able to fake the prompt's structure",
            hint="Remove the tag, or choose to defuse control tags in Settings > Chat.",
        )
    return out, (f"defused control tags in the messages: {listing}",)
