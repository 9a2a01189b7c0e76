"""The chat transcript: stored messages rendered as Markdown (code blocks with a Copy link and
their code-scan findings, a stats line, guard verdict badges, citations, action links), and an
answer that streams in by appending at the end of the document, so each repaint costs the new
text, not the answer. The code scan itself runs in jobs (scans.py): an answer shows "Scanning
the code …" until its scan has come, then its findings under each block."""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QGuiApplication,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
)
from PySide6.QtWidgets import QTextBrowser, QWidget

from core.chat.export import stats_line
from core.chat.hooks import citation_label, left_out_note, split_citations, warned_note
from core.chat.markdown import split_blocks
from core.chat.store import ChatMessage
from core.safety.verdict import GuardVerdict
from desktop.pages.chat.scans import AnswerScans, answer_notes_html, block_map, findings_html
from desktop.widgets.verdicts import COLOURS, badge_parts

ASSISTANT_COLOUR = "#00695c"
WARNING_STYLE = "color:#7a5300; font-size:small"


@functools.lru_cache(maxsize=1024)
def markdown_html(text: str) -> str:
    """Qt's own Markdown renderer, body only; remembered, since the transcript is
    re-rendered after each turn and old messages do not change."""
    doc = QTextDocument()
    doc.setMarkdown(text)
    full = doc.toHtml()
    start = full.find(">", full.find("<body")) + 1
    end = full.rfind("</body>")
    return full[start:end] if start > 0 and end > start else html.escape(text)


def badge_text(verdict: dict[str, Any] | None) -> str:
    """The words of a message's verdict badge ("" when the message was never checked)."""
    text, _tip, _level = badge_parts(verdict)
    if text and (verdict or {}).get("action") == "warn":
        text = "warning · " + text
    return text


UNGUARDED = "sent without the guard"


def badge_html(verdict: dict[str, Any] | None, unguarded: str = "") -> str:
    """The badge as the VerdictBadge widget draws it: same words, same colours. A message sent
    without the guard by the user's choice says so (``unguarded``: why)."""
    text = badge_text(verdict)
    if not text and unguarded:
        bg, fg = COLOURS["warn"]
        return (f"&nbsp;<span title='{html.escape(unguarded, quote=True)}' "
                f"style='background-color:{bg}; color:{fg}; font-size:small'>"
                f"&nbsp;{UNGUARDED}&nbsp;</span>")
    if not text:
        return ""
    _text, tip, level = badge_parts(verdict)
    bg, fg = COLOURS.get(level, COLOURS["unknown"])
    return (f"&nbsp;<span title='{html.escape(tip, quote=True)}' style='background-color:{bg}; "
            f"color:{fg}; font-size:small'>&nbsp;{html.escape(text)}&nbsp;</span>")


def verdict_sentence(verdict: dict[str, Any] | None) -> str:
    """What the guard said and what the policy did, as a sentence for the user."""
    if not verdict:
        return ""
    try:
        return GuardVerdict.from_dict(verdict).explanation()
    except (TypeError, KeyError):  # stored by another version: say what is certain
        cats = ", ".join(str(c) for c in verdict.get("categories") or [])
        return f"The safety guard judged it {verdict.get('verdict', 'unknown')}" + (
            f": {cats}." if cats else ".")


def _link(action: str, label: str) -> str:
    return f"<a href='{action}' style='color:#0277bd; text-decoration:none'>{label}</a>"


def _button(action: str, label: str) -> str:
    """A link drawn like a small button."""
    return (f"<span style='background-color:#e1f5fe'>&nbsp;<a href='{action}' "
            f"style='color:#01579b; text-decoration:none'><b>{label}</b></a>&nbsp;</span>")


class TranscriptView(QTextBrowser):
    """Read-only transcript. ``action(name, message_id, index)`` is emitted for its links."""

    action = Signal(str, int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.anchorClicked.connect(self._on_anchor)
        self.code: dict[tuple[int, int], str] = {}
        self.revealed: set[int] = set()
        self.scan_code = True
        #: runs the code scans (set by the page; None: no scans)
        self.scans: AnswerScans | None = None
        #: what is on screen, per message id: its badge text, and its code findings per block
        self.badges: dict[int, str] = {}
        self.findings: dict[tuple[int, int], list[Any]] = {}
        self.shown_ids: set[int] = set()
        self._plain = QTextCharFormat()
        self.streaming_text = ""

    # --- whole conversation ----------------------------------------------------------

    def show_messages(self, messages: Sequence[ChatMessage], *, empty_text: str = "",
                      keep_place: bool = False) -> None:
        """Show ``messages`` and scroll to the end (``keep_place``: stay where the reader is,
        unless that was the end). Code scans of answers no longer shown are dropped."""
        bar = self.verticalScrollBar()
        place = None if not keep_place or self.at_end() else bar.value()
        self.streaming_text = ""  # what streamed is shown as stored from now on
        self.code.clear()
        self.badges.clear()
        self.findings.clear()
        self.shown_ids = {m.id for m in messages}
        if not messages:
            self.setHtml(f"<p style='color:#607d8b'>{html.escape(empty_text)}</p>")
        else:
            last_assistant = max((m.id for m in messages if m.role == "assistant"), default=-1)
            parts = [self.message_html(m, is_last=(m.id == last_assistant)) for m in messages]
            self.setHtml("".join(parts))
            if place is None:
                self.scroll_to_end()
            else:
                bar.setValue(place)
        if self.scans is not None:
            self.scans.keep_only(self.shown_ids)

    def message_html(self, msg: ChatMessage, *, is_last: bool = False) -> str:
        who = "You" if msg.role == "user" else "Assistant"
        colour = "#37474f" if msg.role == "user" else ASSISTANT_COLOUR
        verdict = msg.verdict or {}
        action = verdict.get("action")
        hidden = action == "block" and msg.role == "assistant" and msg.id not in self.revealed
        links: list[str] = []
        if msg.role == "user":
            links.append(_link(f"edit:{msg.id}:0", "Edit"))
        else:
            if not hidden:
                links.append(_link(f"copy:{msg.id}:-1", "Copy"))
            if msg.interrupted:
                links.append(_link(f"retry:{msg.id}:0", "Retry"))
            elif is_last:
                links.append(_link(f"regenerate:{msg.id}:0", "Regenerate"))
        self.badges[msg.id] = badge_text(msg.verdict) or (UNGUARDED if msg.unguarded else "")
        head = (f"<p style='margin-top:14px'><b style='color:{colour}'>{who}</b>"
                f"{badge_html(msg.verdict, msg.unguarded)}&nbsp;&nbsp;"
                f"<span style='font-size:small'>{' · '.join(links)}</span></p>")
        why = html.escape(verdict_sentence(msg.verdict))
        if action == "block" and msg.role == "user":
            body = (markdown_html(msg.content) + "<p style='color:#9b1c12'>Not sent to the "
                    f"model. {why}</p>")
        elif hidden:
            body = (f"<p style='color:#9b1c12'>This answer is hidden. {why} &nbsp;"
                    f"{_button(f'reveal:{msg.id}:0', 'Reveal')}</p>")
        elif action == "block":
            body = (f"<p style='color:#9b1c12; font-size:small'>Revealed. {why} &nbsp;"
                    f"{_link(f'hide:{msg.id}:0', 'Hide')}</p>" + self.body_html(msg))
        elif action == "warn":
            body = (self.body_html(msg) if msg.role == "assistant"
                    else markdown_html(msg.content))
            body += f"<p style='{WARNING_STYLE}'>Warning: {why}</p>"
        else:
            body = self.body_html(msg)
        if msg.unguarded and msg.role == "user":
            body += (f"<p style='{WARNING_STYLE}'>You sent this message without the safety "
                     f"guard ({html.escape(msg.unguarded)}); its answer was not checked.</p>")
        foot = ""
        if msg.role == "assistant":
            if msg.warning:  # e.g. the server cut the prompt: said under the answer, plainly
                foot = f"<p style='{WARNING_STYLE}'>Warning: {html.escape(msg.warning)}</p>"
            line = stats_line(msg)
            if msg.interrupted and msg.error:
                line += f" — {msg.error}"
            foot += f"<p style='color:#78909c; font-size:small'>{html.escape(line)}</p>"
            foot += self.citations_html(msg)
        return head + body + foot

    @staticmethod
    def citations_html(msg: ChatMessage) -> str:
        """The answer's numbered references (each opens its chunk), then what was left out."""
        if msg.citations == []:  # grounding was on, and nothing was close enough
            return ("<p style='font-size:small; color:#7a5300; margin:0'>No passage of the "
                    "knowledge base was close enough to the question: this answer is not "
                    "grounded in your documents.</p>")
        used, left = split_citations(msg.citations)
        out = ""
        if used:
            out += ("<p style='font-size:small; color:#607d8b; margin-bottom:0'>"
                    "Sources (click one to read the passage)</p>")
        for c in used:
            target = f"cite:{msg.id}:{int(c.get('n') or 0)}"
            out += (f"<p style='font-size:small; margin:0'>&nbsp;&nbsp;"
                    f"{_link(target, html.escape(citation_label(c)))}</p>")
        for note in [warned_note(c) for c in used] + [left_out_note(c) for c in left]:
            if note:
                out += (f"<p style='font-size:small; color:#7a5300; margin:0'>"
                        f"{html.escape(note)}</p>")
        return out

    def body_html(self, msg: ChatMessage) -> str:
        """The message's Markdown, each code block with its Copy link and, for an answer, its
        code-scan findings (once the scan has come; it is asked for here)."""
        blocks = split_blocks(msg.content)
        codes = [b.text for b in blocks if b.kind == "code"]
        scans = self.scans if self.scan_code else None
        scanned = scans is not None and scans.has_code(msg, len(codes))
        result = scans.result(msg) if scans is not None and scanned else None
        if scans is not None and scanned and result is None:
            scans.request(msg)
        where = block_map(codes, result.blocks) if result is not None else {}
        out: list[str] = []
        k = 0
        for block in blocks:
            if block.kind == "text":
                out.append(markdown_html(block.text))
                continue
            self.code[(msg.id, k)] = block.text
            found = result.scan.for_block(where[k]) if result is not None and k in where else []
            if found:
                self.findings[(msg.id, k)] = found
            lang = block.language or "code"
            if not block.language and result is not None and k in where:
                guess = result.blocks[where[k]].language
                lang += f" (read as {guess})" if guess else ""
            out.append(
                f"<p style='font-size:small; color:#607d8b; margin-bottom:0'>"
                f"{html.escape(lang)} &nbsp;{_link(f'copy:{msg.id}:{k}', 'Copy code')}</p>"
                "<table width='100%' cellpadding='6' style='background-color:#f3f5f7'>"
                f"<tr><td><pre>{html.escape(block.text)}</pre></td></tr></table>"
                + findings_html(found))
            k += 1
        if scanned:
            missed = [i for i in range(k) if i not in where] if result is not None else []
            out.append(answer_notes_html(result, set(where.values()), missed))
        return "".join(out) or "<p style='color:#90a4ae'><i>(empty)</i></p>"

    # --- streaming -------------------------------------------------------------------

    def begin_stream(self) -> None:
        """Start the streamed answer below what is shown: its "Assistant" header in a paragraph
        of its own (never run on from the message above), then the paragraph the text goes
        into."""
        at_end = self.at_end()
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        head = QTextBlockFormat()
        head.setTopMargin(14)
        name = QTextCharFormat()
        name.setFontWeight(QFont.Weight.Bold)
        name.setForeground(QColor(ASSISTANT_COLOUR))
        cursor.insertBlock(head, name)
        cursor.insertText("Assistant", name)
        body = QTextBlockFormat()
        body.setTopMargin(12)  # as far below the header as a stored answer's text
        cursor.insertBlock(body, self._plain)
        self.streaming_text = ""
        if at_end:
            self.scroll_to_end()

    def append_stream(self, text: str) -> None:
        """Append streamed text at the end: cost proportional to ``text`` only."""
        at_end = self.at_end()
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text, self._plain)
        self.streaming_text += text
        if at_end:
            self.scroll_to_end()

    def at_end(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - 4

    def scroll_to_end(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    # --- links -----------------------------------------------------------------------

    def _on_anchor(self, url: QUrl) -> None:
        name, _, rest = url.toString().partition(":")
        mid, _, index = rest.partition(":")
        try:
            message_id, k = int(mid), int(index or 0)
        except ValueError:
            return
        if name == "copy" and k >= 0:
            QGuiApplication.clipboard().setText(self.code.get((message_id, k), ""))
        self.action.emit(name, message_id, k)
