"""The chat transcript: stored messages rendered as Markdown (code blocks with a Copy link, a
stats line, verdict badges, citations, action links), and an answer that streams in by
appending at the end of the document, so each repaint costs the new text, not the answer."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QGuiApplication, QTextCharFormat, QTextCursor, QTextDocument
from PySide6.QtWidgets import QTextBrowser, QWidget

from core.chat.export import stats_line
from core.chat.markdown import split_blocks
from core.chat.store import ChatMessage

try:  # the safety area's colours and wording, when it is there
    from desktop.pages.safety_widgets import COLOURS, badge_parts, findings_html
except ImportError:  # pragma: no cover - keeps the chat working without the safety page
    COLOURS = {"safe": ("#e3f4e6", "#1f6b2c"), "unsafe": ("#fde4e1", "#9b1c12"),
               "warn": ("#fff3d6", "#7a5300"), "unknown": ("#ece4f7", "#4f2d84"),
               "skipped": ("#eeeeee", "#555555")}

    def badge_parts(verdict: Any) -> tuple[str, str, str]:
        if not verdict:
            return "", "", "skipped"
        kind = str(verdict.get("verdict", "unknown"))
        return kind, "", {"safe": "safe", "unsafe": "unsafe"}.get(kind, "unknown")

    def findings_html(findings: Any) -> str:
        return ""


def markdown_html(text: str) -> str:
    """Qt's own Markdown renderer, body only."""
    doc = QTextDocument()
    doc.setMarkdown(text)
    full = doc.toHtml()
    start = full.find(">", full.find("<body")) + 1
    end = full.rfind("</body>")
    return full[start:end] if start > 0 and end > start else html.escape(text)


def badge_html(verdict: dict[str, Any] | None) -> str:
    text, _tip, level = badge_parts(verdict)
    if not text:
        return ""
    bg, fg = COLOURS.get(level, COLOURS["unknown"])
    return (f"&nbsp;<span style='background-color:{bg}; color:{fg}'>&nbsp;"
            f"{html.escape(text)}&nbsp;</span>")


def _link(action: str, label: str) -> str:
    return f"<a href='{action}' style='color:#0277bd; text-decoration:none'>{label}</a>"


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
        self._plain = QTextCharFormat()
        self.streaming_text = ""

    # --- whole conversation ----------------------------------------------------------

    def show_messages(self, messages: Sequence[ChatMessage], *, empty_text: str = "") -> None:
        self.code.clear()
        if not messages:
            self.setHtml(f"<p style='color:#607d8b'>{html.escape(empty_text)}</p>")
            return
        last_assistant = max((m.id for m in messages if m.role == "assistant"), default=-1)
        parts = [self.message_html(m, is_last=(m.id == last_assistant)) for m in messages]
        self.setHtml("".join(parts))
        self.scroll_to_end()

    def message_html(self, msg: ChatMessage, *, is_last: bool = False) -> str:
        who = "You" if msg.role == "user" else "Assistant"
        colour = "#37474f" if msg.role == "user" else "#00695c"
        links: list[str] = []
        if msg.role == "user":
            links.append(_link(f"edit:{msg.id}:0", "Edit"))
        else:
            links.append(_link(f"copy:{msg.id}:-1", "Copy"))
            if msg.interrupted:
                links.append(_link(f"retry:{msg.id}:0", "Retry"))
            elif is_last:
                links.append(_link(f"regenerate:{msg.id}:0", "Regenerate"))
        head = (f"<p style='margin-top:14px'><b style='color:{colour}'>{who}</b>"
                f"{badge_html(msg.verdict)}&nbsp;&nbsp;"
                f"<span style='font-size:small'>{' · '.join(links)}</span></p>")
        blocked = (msg.verdict or {}).get("action") == "block"
        if blocked and msg.role == "user":
            body = (markdown_html(msg.content) + "<p style='color:#9b1c12'>Not sent to the "
                    "model: your safety policy blocks this message.</p>")
        elif blocked and msg.id not in self.revealed:
            body = ("<p style='color:#9b1c12'>This answer is hidden by your safety policy. "
                    f"{_link(f'reveal:{msg.id}:0', 'Reveal')}</p>")
        else:
            body = self.body_html(msg)
        foot = ""
        if msg.role == "assistant":
            line = stats_line(msg)
            if msg.interrupted and msg.error:
                line += f" — {msg.error}"
            foot = f"<p style='color:#78909c; font-size:small'>{html.escape(line)}</p>"
            for c in msg.citations or []:
                page = f", page {c.get('page')}" if c.get("page") not in (None, "") else ""
                score = c.get("score")
                label = (f"[{c.get('n')}] {html.escape(str(c.get('source', '')))}{page}"
                         + (f" (score {float(score):.2f})" if score is not None else ""))
                target = f"cite:{msg.id}:{int(c.get('n') or 0)}"
                foot += f"<p style='font-size:small; margin:0'>{_link(target, label)}</p>"
        return head + body + foot

    def body_html(self, msg: ChatMessage) -> str:
        findings: dict[int, list[Any]] = {}
        if self.scan_code and msg.role == "assistant" and "```" in msg.content:
            try:
                from core.safety.code_scan import scan_markdown

                for f in scan_markdown(msg.content):
                    findings.setdefault(f.block_index, []).append(f)
            except ImportError:
                pass
        out: list[str] = []
        k = 0
        for block in split_blocks(msg.content):
            if block.kind == "text":
                out.append(markdown_html(block.text))
                continue
            self.code[(msg.id, k)] = block.text
            lang = html.escape(block.language or "code")
            out.append(
                f"<p style='font-size:small; color:#607d8b; margin-bottom:0'>{lang} &nbsp;"
                f"{_link(f'copy:{msg.id}:{k}', 'Copy code')}</p>"
                "<table width='100%' cellpadding='6' style='background-color:#f3f5f7'>"
                f"<tr><td><pre>{html.escape(block.text)}</pre></td></tr></table>"
                + findings_html(findings.get(k, [])))
            k += 1
        return "".join(out) or "<p style='color:#90a4ae'><i>(empty)</i></p>"

    # --- streaming -------------------------------------------------------------------

    def begin_stream(self, user: ChatMessage | None, header: str = "Assistant") -> None:
        at_end = self.at_end()
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        if user is not None:
            cursor.insertHtml(self.message_html(user))
        cursor.insertHtml(f"<p style='margin-top:14px'><b style='color:#00695c'>"
                          f"{html.escape(header)}</b></p>")
        cursor.insertBlock()
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
