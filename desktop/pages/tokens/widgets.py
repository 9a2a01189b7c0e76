"""Widgets of the Tokens page: a strip of coloured token spans with hover details."""

from __future__ import annotations

import html

from PySide6.QtCore import QEvent, QObject, QPoint
from PySide6.QtGui import QHelpEvent
from PySide6.QtWidgets import QTextBrowser, QToolTip, QWidget

from core.analysis.tokens import TokenizedText, TokenSpan, coverage_groups

PALETTE = ["#ffe0b2", "#c8e6c9", "#bbdefb", "#f8bbd0", "#d1c4e9", "#b2ebf2", "#fff59d", "#dcedc8"]
BYTE_PALETTE = ["#ffcc80", "#a5d6a7", "#90caf9", "#f48fb1", "#b39ddb", "#80deea", "#fff176", "#c5e1a5"]
SPECIAL_BG = "#cfd8dc"
CUT_MARK = '<span style="color:#d32f2f; font-weight:bold;">┃</span>'


def visible_whitespace(text: str) -> str:
    """HTML for text with spaces, tabs and newlines made visible."""
    out = []
    for ch in text:
        if ch == " ":
            out.append('<span style="color:#90a4ae;">·</span>')
        elif ch == "\t":
            out.append('<span style="color:#90a4ae;">→</span>')
        elif ch == "\n":
            out.append('<span style="color:#90a4ae;">↵</span><br>')
        elif ch == "\r":
            out.append('<span style="color:#90a4ae;">␍</span>')
        else:
            out.append(html.escape(ch))
    return "".join(out)


def token_tooltip(span: TokenSpan, kind: str) -> str:
    hexed = " ".join(f"{b:02X}" for b in span.bytes) or "(none)"
    lines = [f"id {span.id}", f"bytes: {hexed}"]
    if kind == "wordpiece":
        lines.append(f"vocabulary entry: {span.piece}")
    else:
        lines.append(f"reads as: {span.piece!r}")
    if span.start == span.end and not span.special:
        lines.append("part of the next character (an incomplete UTF-8 sequence)")
    else:
        lines.append(f"text: {span.text!r} (characters {span.start}–{span.end})")
    lines.append("special token: yes" if span.special else "special token: no")
    return "\n".join(lines)


class TokenStrip(QTextBrowser):
    """One tokenizer's result: every token a coloured, hoverable span.

    Differing cut points (where the other tokenizers do not cut) are marked with a red bar.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setReadOnly(True)
        self.setMouseTracking(True)
        self.viewport().installEventFilter(self)
        self.result: TokenizedText | None = None
        self.setMinimumHeight(60)

    def show_tokens(self, result: TokenizedText, differing: set[int] | None = None) -> None:
        self.result = result
        self.setHtml(render_tokens_html(result, differing or set()))
        doc_h = int(self.document().size().height()) + 12
        self.setFixedHeight(max(60, min(doc_h, 260)))

    def span_at(self, pos_x: int, pos_y: int) -> TokenSpan | None:
        href = self.anchorAt(QPoint(pos_x, pos_y))
        if not href.startswith("tok:") or self.result is None:
            return None
        i = int(href[4:])
        return self.result.spans[i] if 0 <= i < len(self.result.spans) else None

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt name
        if obj is self.viewport() and event.type() == QEvent.Type.ToolTip:
            assert isinstance(event, QHelpEvent)
            span = self.span_at(event.pos().x(), event.pos().y())
            if span is not None and self.result is not None:
                QToolTip.showText(event.globalPos(), token_tooltip(span, self.result.kind), self)
            else:
                QToolTip.hideText()
            return True
        return super().eventFilter(obj, event)


def render_tokens_html(result: TokenizedText, differing: set[int]) -> str:
    text = result.text
    parts: list[str] = ['<div style="font-family:monospace; font-size:13px; line-height:160%;">']
    pos = 0
    marked: set[int] = set()

    def mark(at: int) -> None:
        if at in differing and at not in marked and 0 < at < len(text):
            parts.append(CUT_MARK)
            marked.add(at)

    for g, group in enumerate(coverage_groups(result.spans)):
        for i in group:
            s = result.spans[i]
            if s.start > pos:  # text no token covers (WordPiece drops whitespace)
                parts.append(visible_whitespace(text[pos : s.start]))
                pos = s.start
            if s.special:  # inserted (no text) or typed and read as special (e.g. "[SEP]")
                parts.append(_anchor(i, SPECIAL_BG, f"<b>{html.escape(s.piece)}</b>"))
                pos = max(pos, s.end)
                continue
            start = _skip_ws(text, s.start)
            if start < s.end:
                mark(start)
            if s.start == s.end:
                label = f'<span style="font-size:10px;">{html.escape(s.piece)}</span>'
                parts.append(_anchor(i, BYTE_PALETTE[g % len(BYTE_PALETTE)], label))
                continue
            shown = visible_whitespace(text[s.start : s.end]) if s.end > s.start else ""
            parts.append(_anchor(i, PALETTE[g % len(PALETTE)], shown))
            pos = max(pos, s.end)
    if pos < len(text):
        parts.append(visible_whitespace(text[pos:]))
    parts.append("</div>")
    return "".join(parts)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _anchor(i: int, colour: str, inner: str) -> str:
    return (
        f'<a href="tok:{i}" style="text-decoration:none; color:#212121; '
        f'background-color:{colour};">{inner}</a><span style="font-size:3px;"> </span>'
    )


def tokens_summary_html(result: TokenizedText) -> str:
    special = result.count - result.content_count
    extra = f" ({special} special)" if special else ""
    if result.lossless:
        lossy = ""
    elif result.kind == "wordpiece":
        lossy = " · normalises the text (lower-case, no accents, no spaces)"
    else:
        lossy = " · some tokens do not map back to the text exactly"
    return (
        f"<b>{html.escape(result.tokenizer)}</b> <span style='color:#607d8b;'>{result.kind}</span>"
        f" — {result.count} tokens{extra}, {result.chars_per_token:.2f} characters per token"
        f"{lossy}"
    )

