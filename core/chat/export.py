"""Export a stored conversation to Markdown (for people) or JSON (for programs). Both keep what
the transcript says about a message: its guard verdict, a message sent without the guard (and
why), and an answer's warning."""

from __future__ import annotations

import datetime
import json
from typing import Any

from core.chat.hooks import citation_label, left_out_note, split_citations
from core.chat.store import ChatMessage, HistoryStore


def stats_line(msg: ChatMessage) -> str:
    """'42 tokens · 31.5 tokens/s · first token 0.12 s · model · format' (what is known)."""
    parts: list[str] = []
    if msg.completion_tokens:
        parts.append(f"{msg.completion_tokens} tokens")
    if msg.tokens_per_s:
        parts.append(f"{msg.tokens_per_s:.1f} tokens/s")
    if msg.first_token_s is not None:
        parts.append(f"first token {msg.first_token_s:.2f} s")
    if msg.model:
        parts.append(msg.model)
    if msg.format:
        parts.append(msg.format)
    if msg.finish_reason == "cancelled":
        parts.append("stopped")
    if msg.interrupted:
        parts.append("interrupted")
    return " · ".join(parts)


def _one_line(text: str) -> str:
    """``text`` on one line, for a Markdown quote."""
    return " ".join(text.split())


def to_dict(store: HistoryStore, cid: int) -> dict[str, Any]:
    conv = store.conversation(cid)
    return {
        "conversation": conv.to_dict(),
        "messages": [m.to_dict() for m in store.messages(cid)],
    }


def to_json(store: HistoryStore, cid: int) -> str:
    return json.dumps(to_dict(store, cid), ensure_ascii=False, indent=2)


def to_markdown(store: HistoryStore, cid: int) -> str:
    conv = store.conversation(cid)
    when = datetime.datetime.fromtimestamp(conv.created).strftime("%Y-%m-%d %H:%M")
    lines = [f"# {conv.title or 'Conversation'}", ""]
    lines.append(f"*{when} · model `{conv.model or '?'}` · format `{conv.format or '?'}`*")
    lines.append("")
    if conv.system.strip():
        lines += ["**System**", "", conv.system.strip(), ""]
    for msg in store.messages(cid):
        who = {"user": "You", "assistant": "Assistant"}.get(msg.role, msg.role.title())
        lines += [f"## {who}", "", msg.content.rstrip() or "*(empty)*", ""]
        if msg.unguarded:  # the user's choice, for this turn, with why the guard was away
            what = ("You sent this message" if msg.role == "user"
                    else "This answer came to a message sent")
            lines += [f"> {what} without the safety guard ({_one_line(msg.unguarded)}); "
                      "it was not checked.", ""]
        if msg.role == "assistant":
            if msg.warning:  # e.g. the server cut the prompt: said under the answer
                lines += [f"> Warning: {_one_line(msg.warning)}", ""]
            line = stats_line(msg)
            if line:
                lines += [f"<sub>{line}</sub>", ""]
        if msg.verdict:
            v = msg.verdict
            cats = ", ".join(str(c) for c in v.get("categories") or [])
            lines += [f"> Safety: {v.get('verdict', '?')}" + (f" ({cats})" if cats else ""), ""]
        used, left = split_citations(msg.citations)
        lines += [f"- {citation_label(c)}: `{c.get('source')}`" for c in used]
        lines += [f"- {left_out_note(c)}" for c in left]
        if msg.citations:
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
