"""Documents in the Chat page: the "Use documents" switch with its knowledge base picker, and
the Sources panel that lists an answer's references (or a retrieval preview) and shows the exact
chunk behind each: source path, page, chunk index, score and the full text."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.chat.hooks import citation_label, cited_where, left_out_note, split_citations
from desktop.context import AppContext
from desktop.jobs import Job

if TYPE_CHECKING:
    from core.config import Settings
    from desktop.pages.chat.guard import ChatGuard

NO_KBS = "No knowledge bases yet"
CHOOSE = "Choose a knowledge base"
NO_KB_CHOSEN = ("Choose a knowledge base for “Use documents” (create one on the Documents "
                "page), or turn the switch off.")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def answer_summary(cites: Sequence[dict[str, Any]] | None, kb: str) -> str:
    """What the Sources panel says above an answer's references."""
    used, left = split_citations(cites)
    where = f" of the knowledge base '{kb}'" if kb else ""
    text = f"This answer's prompt held {_count(len(used), 'passage')}{where}"
    if left:
        text += f"; the safety guard left out {len(left)} more"
    return text + "."


class Preview(NamedTuple):
    """What "Retrieval only" found: the citations a turn would get for ``text``."""

    kb: str
    text: str
    citations: list[dict[str, Any]]
    threshold: float


def preview(job: Job, kb: str, text: str, settings: Settings, chat_guard: ChatGuard,
            check: bool, conversation_id: str) -> Preview:
    """Job of "Retrieval only": the citations a turn would get (the guard screening them when
    ``check``), and nothing generated."""
    from core.chat.hooks import cite_retrieved
    from core.chat.retrieval import open_retrieval
    from desktop.pages.chat.guard import TurnGuard

    guard = chat_guard.current(settings) if check else None
    retrieval = open_retrieval(kb, settings)
    try:
        screen = TurnGuard(guard, job) if guard is not None else None
        _hits, cites = cite_retrieved(retrieval(text), screen, check_documents=check,
                                      conversation_id=conversation_id)
    finally:
        retrieval.close()
    return Preview(kb, text, cites, retrieval.threshold)


def preview_summary(kb: str, text: str, cites: Sequence[dict[str, Any]],
                    threshold: float) -> str:
    """What the Sources panel says above a retrieval preview."""
    used, left = split_citations(cites)
    asked = " ".join(text.split())
    asked = asked if len(asked) <= 80 else asked[:79] + "…"
    if used:
        summary = (f"Retrieval only, nothing generated: {_count(len(used), 'passage')} of "
                   f"'{kb}' would enter the prompt for “{asked}”")
    else:
        summary = (f"Retrieval only: no passage of '{kb}' scores {threshold:.2f} or more for "
                   f"“{asked}”, so the answer would not be grounded")
    if left:
        summary += f"; the safety guard would leave out {len(left)}"
    return summary + "."


class KbChooser(QObject):
    """The switch and the picker. The list is read from the store in a worker when the switch
    first turns on, and again whenever knowledge bases change (Documents page)."""

    listed = Signal()  #: the picker holds the current list

    def __init__(self, ctx: AppContext, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.use_docs = QCheckBox("Use documents")
        self.use_docs.setToolTip("Ground each answer in a knowledge base: the passages "
                                 "retrieved for your message go into the prompt as data, and "
                                 "the answer lists them as numbered references.")
        self.kb_box = QComboBox()
        self.kb_box.setMinimumWidth(160)
        self.kb_box.setEnabled(False)
        self.kb_box.setPlaceholderText(CHOOSE)
        self.loaded = False
        self._want = ""
        self.use_docs.toggled.connect(self._toggled)
        ctx.bus.knowledge_bases_changed.connect(self._changed)

    def chosen(self) -> str:
        """The knowledge base to ground in ("" when the switch is off)."""
        return self.kb_box.currentText().strip() if self.use_docs.isChecked() else ""

    def choose(self, name: str) -> None:
        """Show a conversation's knowledge base ("" turns the switch off)."""
        if not name:
            self.use_docs.setChecked(False)
            return
        self._want = name
        self.use_docs.setChecked(True)
        if self.loaded:
            self._select(name)

    def refresh(self) -> None:
        settings = self.ctx.settings

        def names(job: Job) -> list[str]:
            from core.rag.knowledge_base import list_kbs

            return [kb.name for kb in list_kbs(settings=settings)]

        self.ctx.jobs.run(names, group="chat-kbs", on_result=self._fill, on_error=self._failed)

    def _toggled(self, on: bool) -> None:
        self.kb_box.setEnabled(on)
        if on and not self.loaded:
            self.refresh()

    def _changed(self) -> None:
        if self.loaded or self.use_docs.isChecked():
            self.refresh()

    def _fill(self, names: Sequence[str]) -> None:
        keep = self._want or self.kb_box.currentText()
        self._want = ""
        self.kb_box.blockSignals(True)
        self.kb_box.clear()
        self.kb_box.addItems(list(names))
        self.kb_box.setPlaceholderText(CHOOSE if names else NO_KBS)
        self.kb_box.blockSignals(False)
        self.loaded = True
        self._select(keep if keep else (names[0] if names else ""))
        self.listed.emit()

    def _select(self, name: str) -> None:
        # a name no longer listed (removed) is not replaced silently by another one
        self.kb_box.setCurrentIndex(self.kb_box.findText(name) if name else -1)

    def _failed(self, exc: BaseException) -> None:
        self.kb_box.setPlaceholderText("Knowledge bases unavailable")
        self.kb_box.setToolTip(self.ctx.show_error(exc))
        self.listed.emit()


class SourcesPanel(QWidget):
    """References of one answer, or what retrieval alone found, with the chunk behind each."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        title = QLabel("Sources")
        title.setObjectName("pageTitle")
        self.close_button = QToolButton()
        self.close_button.setText("Close")
        self.close_button.clicked.connect(self.hide)
        head.addWidget(title)
        head.addStretch(1)
        head.addWidget(self.close_button)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.refs = QListWidget()
        self.refs.setMaximumHeight(150)
        self.details = QLabel("")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.text.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout.addLayout(head)
        for w in (self.summary, self.refs, self.details):
            layout.addWidget(w)
        layout.addWidget(self.text, 1)
        self.citations: list[dict[str, Any]] = []
        self.refs.currentRowChanged.connect(self._show_row)

    @property
    def current(self) -> dict[str, Any] | None:
        row = self.refs.currentRow()
        return self.citations[row] if 0 <= row < len(self.citations) else None

    def show_citations(self, cites: Sequence[dict[str, Any]], summary: str,
                       select: int | None = None) -> None:
        """List ``cites``; ``select`` is the reference number to open (default: the first)."""
        self.citations = list(cites)
        self.summary.setText(summary)
        self.refs.blockSignals(True)
        self.refs.clear()
        row = 0
        for i, c in enumerate(self.citations):
            if c.get("left_out"):
                item = QListWidgetItem(f"left out · {cited_where(c)}")
                item.setForeground(QBrush(QColor("#9b1c12")))
            else:
                item = QListWidgetItem(citation_label(c))
            item.setToolTip(str(c.get("source", "")))
            self.refs.addItem(item)
            if select is not None and c.get("n") == select:
                row = i
        self.refs.blockSignals(False)
        self.refs.setVisible(bool(self.citations))
        rows = max(1, min(self.refs.count(), 6))
        self.refs.setFixedHeight(rows * self.refs.sizeHintForRow(0) + 2 * self.refs.frameWidth()
                                 + 4 if self.citations else 0)
        if self.citations:
            self.refs.setCurrentRow(row)
            self._show_row(row)
        else:
            self.details.setText("")
            self.text.clear()
            self.text.setVisible(False)
        self.show()
        self._make_room()

    def _make_room(self, width: int = 340) -> None:
        """In a splitter, take room from the widest pane (a pane shown late may get none)."""
        split = self.parentWidget()
        if not isinstance(split, QSplitter):
            return
        sizes = split.sizes()
        me = split.indexOf(self)
        if sizes[me] >= width // 2:
            return
        widest = max(range(len(sizes)), key=lambda i: sizes[i])
        give = min(width, max(sizes[widest] - 360, 0))
        sizes[widest] -= give
        sizes[me] += give
        split.setSizes(sizes)

    def show_message(self, summary: str) -> None:
        self.show_citations([], summary)

    def _show_row(self, row: int) -> None:
        c = self.current
        if c is None:
            return
        page = c.get("page")
        score = c.get("score")
        facts = [("Source", str(c.get("source", ""))),
                 ("Page", str(page) if page not in (None, "") else "—"),
                 ("Chunk", str(c.get("chunk_index", "—"))),
                 ("Score", f"{float(score):.3f} (cosine similarity to your message)"
                  if isinstance(score, (int, float)) else "—")]
        rows = "".join(f"<tr><td style='color:#607d8b; padding-right:8px'>{k}</td>"
                       f"<td>{html.escape(v)}</td></tr>" for k, v in facts)
        self.details.setText(f"<table>{rows}</table>")
        self.text.setVisible(True)
        if c.get("left_out"):
            self.text.setPlainText(left_out_note(c) + "\n\nIts text is not shown here.")
        else:
            self.text.setPlainText(str(c.get("text", "")))
