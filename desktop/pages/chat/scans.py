"""The code scan of the answers on the Chat page: one job per answer runs core's
``scan_markdown`` (CodeShield's rules and semgrep, within its time budget) off the GUI thread;
its result is remembered per message and content, so showing the transcript again scans
nothing; and the HTML the transcript shows of it: each finding under its block (line within
the block, CWE, rule, severity), "Scanning the code …" while it runs, and an incomplete scan
said plainly under the answer, never shown as clean."""

from __future__ import annotations

import html
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from core.errors import CorralError
from core.safety.code_scan import CodeBlock, CodeScan, Finding, code_blocks

if TYPE_CHECKING:
    from core.chat.store import ChatMessage
    from desktop.jobs import Job, JobRunner

KEEP = 256  #: answers whose scan is remembered
QUIET = "color:#78909c; font-size:small"
WARNING = "color:#7a5300; font-size:small"
SCANNING = "Scanning the code …"
CLEAN = "Code scan: no insecure patterns found."
INCOMPLETE = "Code scan incomplete: "


@dataclass(frozen=True)
class AnswerScan:
    """The scan of one answer's text: the blocks the scanner found, and what it found."""

    content: str
    blocks: tuple[CodeBlock, ...]
    scan: CodeScan


def scan_answer_job(job: Job, content: str) -> AnswerScan:
    """The whole scan of an answer, every block in one scan (semgrep runs once)."""
    from core.safety.code_scan import scan_markdown

    return AnswerScan(content, tuple(code_blocks(content)), scan_markdown(content))


def failed_scan(content: str, exc: BaseException) -> AnswerScan:
    """A scan that could not run at all: incomplete, saying why (never clean)."""
    why = exc.sentence() if isinstance(exc, CorralError) else f"{type(exc).__name__}: {exc}"
    return AnswerScan(content, tuple(code_blocks(content)),
                      CodeScan([], problems=[f"the scan failed: {why}"]))


def _norm(code: str) -> str:
    return "\n".join(line.strip() for line in code.split("\n")).strip()


def block_map(shown: Sequence[str], blocks: Sequence[CodeBlock]) -> dict[int, int]:
    """Which scanned block each code block on screen is: ``{shown index: block_index}``.

    The transcript's splitter (core.chat.markdown) and the scanner's differ at the edges: a
    fence indented in a list is code to the scan and text on screen, and an indented block's
    lines keep their indent on screen only. So blocks are matched in order by their code."""
    out: dict[int, int] = {}
    start = 0
    for k, code in enumerate(shown):
        key = _norm(code)
        for i in range(start, len(blocks)):
            if _norm(blocks[i].code) == key:
                out[k] = blocks[i].index
                start = i + 1
                break
    return out


def findings_html(findings: Sequence[Finding]) -> str:
    """The findings of one block: line within the block, what it is, CWE, rule, severity."""
    if not findings:
        return ""
    items = []
    for f in findings:
        tags = " · ".join(t for t in (f.cwe, f"rule {f.rule_id}", f.severity) if t)
        why = f.why if len(f.why) <= 240 else f.why[:237] + "..."
        items.append(f"<li><b>line {f.line}</b>: {html.escape(f.title)} "
                     f"<span style='color:#777'>({html.escape(tags)})</span><br>"
                     f"<span style='color:#555; font-size:small'>{html.escape(why)}</span></li>")
    return ("<div style='color:#9b1c12'>Possible security problems in this code:</div>"
            f"<ul style='margin-top:2px'>{''.join(items)}</ul>")


def answer_notes_html(result: AnswerScan | None, shown: Collection[int],
                      unscanned: Sequence[int] = ()) -> str:
    """What the scan says under the answer: that it runs (``result`` None), findings in code
    shown as text (blocks not in ``shown``), code on screen the scanner did not read as code
    (``unscanned``: 0-based numbers on screen), and an incomplete scan, or a clean one."""
    if result is None:
        return f"<p style='{QUIET}'>{html.escape(SCANNING)}</p>"
    out = ""
    if unscanned:
        which = ", ".join(str(k + 1) for k in unscanned)
        many = len(unscanned) > 1
        out += (f"<p style='{WARNING}'>Code block{'s' if many else ''} {which} on screen "
                f"{'were' if many else 'was'} not scanned: the scan did not read "
                f"{'them' if many else 'it'} as fenced code.</p>")
    elsewhere = [f for f in result.scan if f.block_index not in shown]
    for index in dict.fromkeys(f.block_index for f in elsewhere):
        out += (f"<p style='{QUIET}; margin-bottom:0'>Code block {index + 1} of the answer "
                "(shown as text):</p>"
                + findings_html([f for f in elsewhere if f.block_index == index]))
    if not result.scan.complete:
        why = " ".join(result.scan.problems)
        so_far = (" The problems listed are those found before it stopped."
                  if len(result.scan) else " It found nothing so far, which does not mean "
                  "the code is safe.")
        out += f"<p style='{WARNING}'>{html.escape(INCOMPLETE + why + so_far)}</p>"
    elif not result.scan and not unscanned:
        out += f"<p style='{QUIET}'>{html.escape(CLEAN)}</p>"
    return out


class AnswerScans(QObject):
    """The scans of the answers shown: at most one job per answer (group ``chat-scan-ID``), a
    newer content of the same answer supersedes the older one, and ``keep_only`` drops the
    scans of answers no longer shown (another conversation). ``scanned(message id)`` says a
    result (or a failure) has come and the transcript can show it."""

    scanned = Signal(int)

    def __init__(self, jobs: JobRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self._done: dict[int, AnswerScan] = {}
        self._running: dict[int, str] = {}  # message id -> the content being scanned

    @staticmethod
    def has_code(msg: ChatMessage, shown_blocks: int = 0) -> bool:
        """An answer with code to scan (fenced blocks the scanner finds, or ``shown_blocks``
        code blocks on screen)."""
        return msg.role == "assistant" and bool(shown_blocks or code_blocks(msg.content))

    def result(self, msg: ChatMessage) -> AnswerScan | None:
        """The scan of ``msg`` as it reads now, if it has come."""
        done = self._done.get(msg.id)
        return done if done is not None and done.content == msg.content else None

    def running(self, msg: ChatMessage) -> bool:
        return self._running.get(msg.id) == msg.content

    def request(self, msg: ChatMessage) -> None:
        """Scan ``msg`` in a job, unless its scan is known or on its way."""
        if self.result(msg) is not None or self.running(msg):
            return
        mid, content = msg.id, msg.content
        self._running[mid] = content
        self.jobs.run(scan_answer_job, content, group=self.group(mid), quiet=True,
                      on_result=lambda r: self._arrived(mid, r),
                      on_error=lambda exc: self._arrived(mid, failed_scan(content, exc)),
                      on_cancelled=lambda _partial: self._forget(mid, content))

    @staticmethod
    def group(message_id: int) -> str:
        return f"chat-scan-{message_id}"

    def keep_only(self, message_ids: Collection[int]) -> None:
        """Drop the scans on their way for answers not in ``message_ids``: their results are
        never painted (shown again later, such an answer is scanned again)."""
        for mid in [m for m in self._running if m not in message_ids]:
            self.jobs.drop(self.group(mid))
            del self._running[mid]

    def drop_all(self) -> None:
        self.keep_only(())

    def _forget(self, mid: int, content: str) -> None:
        if self._running.get(mid) == content:
            del self._running[mid]

    def _arrived(self, mid: int, result: AnswerScan) -> None:
        self._forget(mid, result.content)
        self._done.pop(mid, None)
        self._done[mid] = result
        while len(self._done) > KEEP:
            del self._done[next(iter(self._done))]
        self.scanned.emit(mid)
