"""Widgets of the Documents page: the drop zone, the knowledge base dialog, the per-file
status list, the retrieval preview, and the page's layout. They show data; the page runs jobs.
"""

from __future__ import annotations

import html
import importlib.util
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.widgets.embedder import embedder_mode_box, embedder_spec_edit

if TYPE_CHECKING:
    from core.rag.catalogue import FileRecord
    from core.rag.chunker import ChunkParams
    from core.rag.indexing import IndexEvent
    from core.rag.knowledge_base import KnowledgeBaseInfo
    from core.rag.retriever import Hit

STATUS_TEXT = {"indexed": "Indexed", "unchanged": "Unchanged", "skipped": "Skipped",
               "removed": "Removed"}
GREY = QColor("#90a4ae")
AMBER = QColor("#b26a00")
TEXT = QColor("#212121")


def describe_progress(ev: IndexEvent) -> str:
    """'3/10 files · 120 chunks · 18.5 chunks/s · ETA 0:42' for an indexing event."""
    eta = ""
    if ev.eta_s is not None:
        m, s = divmod(int(ev.eta_s + 0.5), 60)
        eta = f" · ETA {m}:{s:02d}"
    return (f"{ev.files_done}/{ev.files_total} files · {ev.chunks} chunks · "
            f"{ev.chunks_per_s:.1f} chunks/s{eta}")


def format_when(stamp: float, now: float | None = None) -> str:
    """A short local time: '14:05' today, '3 May 14:05' this year, else '2024-05-03'."""
    if not stamp:
        return ""
    t, today = time.localtime(stamp), time.localtime(now)
    if t[:3] == today[:3]:
        return time.strftime("%H:%M", t)
    if t.tm_year == today.tm_year:
        return time.strftime("%d %b %H:%M", t).lstrip("0")
    return time.strftime("%Y-%m-%d", t)


def display_name(path: str, roots: list[str]) -> str:
    """A file as the user dropped it: 'Folder/sub/file.txt' under a dropped folder."""
    p = Path(path)
    best: Path | None = None
    for root in roots:
        r = Path(root)
        if p != r and p.is_relative_to(r) and (best is None or len(r.parts) > len(best.parts)):
            best = r
    return str(p.relative_to(best.parent)) if best is not None else p.name


def describe_kb(info: KnowledgeBaseInfo) -> str:
    """The info line of a knowledge base (rich text)."""
    name = html.escape(info.name)
    sources = ", ".join(html.escape(s) for s in info.sources) or "—"
    skipped = f" ({info.skipped} skipped)" if info.skipped else ""
    passages = f" · {info.top_k} passages per chat turn" if info.top_k else ""
    return (f"<b>{name}</b>: {info.chunks} chunks from {info.files} files{skipped}<br>"
            f"Embedder: {html.escape(info.embedder)} · <b>{html.escape(info.mode)}</b> mode · "
            f"{info.chunk_tokens}-token chunks, overlap {info.overlap_tokens} · "
            f"keyword weight {info.hybrid_weight:g}{passages}<br>"
            f"<span style='color:#607d8b'>Sources: {sources}</span>")


class DropZone(QFrame):
    """Where files and folders are dropped (the whole page accepts drops too)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("dropZone")
        self.setStyleSheet("QFrame#dropZone { border: 2px dashed #b0bec5; border-radius: 6px;"
                           " background: #f5f7f8; }")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        self.label = QLabel("Drop files or folders here to index them "
                            "(text, Markdown, code, HTML, PDF, DOCX, CSV)")
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setWordWrap(True)
        self.label.setStyleSheet("color: #546e7a;")
        layout.addStretch(1)
        layout.addWidget(self.label)
        row = QHBoxLayout()
        row.addStretch(1)
        self.add_files = QPushButton("Add files…")
        self.add_folder = QPushButton("Add folder…")
        row.addWidget(self.add_files)
        row.addWidget(self.add_folder)
        row.addStretch(1)
        layout.addLayout(row)
        layout.addStretch(1)


class KnowledgeBaseDialog(QDialog):
    """Name (for a new one), embedder, speed mode and chunking of a knowledge base."""

    def __init__(self, *, name: str | None, spec: str, mode: str, chunk_tokens: int = 256,
                 overlap_tokens: int = 32, title: str = "New knowledge base",
                 accept_text: str = "Create", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        form = QFormLayout(self)
        self._wants_name = name is not None
        self.name = QLineEdit(name or "", self)
        self.name.setPlaceholderText("e.g. Manuals")
        if self._wants_name:
            form.addRow("Name", self.name)
        else:
            self.name.hide()
        self.embedder = embedder_spec_edit(spec)
        form.addRow("Embedder", self.embedder)
        self.mode = embedder_mode_box(mode)
        form.addRow("Speed mode", self.mode)
        self.mode_note = QLabel("")
        self.mode_note.setStyleSheet("color: #607d8b;")
        self.mode_note.setWordWrap(True)
        form.addRow("", self.mode_note)
        self.chunk_tokens = QSpinBox()
        self.chunk_tokens.setRange(16, 8192)
        self.chunk_tokens.setValue(chunk_tokens)
        self.chunk_tokens.setSuffix(" tokens")
        self.chunk_tokens.setToolTip("Never more than the embedder reads (256 for MiniLM).")
        form.addRow("Chunk size", self.chunk_tokens)
        self.overlap = QSpinBox()
        self.overlap.setRange(0, 4096)
        self.overlap.setValue(overlap_tokens)
        self.overlap.setSuffix(" tokens")
        form.addRow("Overlap", self.overlap)
        self.problem = QLabel("")
        self.problem.setObjectName("errorText")
        self.problem.setWordWrap(True)
        self.problem.hide()
        form.addRow(self.problem)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText(accept_text)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        self.mode.currentIndexChanged.connect(self._explain_mode)
        self._explain_mode()
        self.setMinimumWidth(460)

    def _explain_mode(self) -> None:
        mode = self.mode.currentData()
        if mode == "standard":
            text = "Loads in a few seconds; works with every embedder."
        elif importlib.util.find_spec("openvino") is None:
            text = ("OpenVINO is not installed, so this knowledge base will use the standard "
                    "embedder (pip install 'corral[fast]').")
        else:
            text = ("The model is prepared once for this CPU first (about a minute, with "
                    "progress)" + ("; it is calibrated on the documents you add." if
                                   mode == "fastest" else "."))
        self.mode_note.setText(text)

    def values(self) -> tuple[str, str, str, ChunkParams]:
        """(name, embedder spec, mode, ChunkParams)."""
        from core.rag.chunker import ChunkParams

        params = ChunkParams(self.chunk_tokens.value(), self.overlap.value())
        return (self.name.text().strip(), self.embedder.text().strip() or "minilm",
                str(self.mode.currentData()), params)

    def accept(self) -> None:
        from core.errors import CorralError
        from core.rag.knowledge_base import check_name

        try:
            if self._wants_name:
                check_name(self.name.text())
            self.values()[3].validate()
        except CorralError as exc:
            self.problem.setText(exc.sentence())
            self.problem.show()
            return
        super().accept()


class FileList(QTreeWidget):
    """One row per file of a knowledge base: status, chunks, when, and why it was skipped."""

    remove_requested = Signal()

    COLUMNS = ["File", "Status", "Chunks", "When", "Reason"]

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("fileStatus")
        self.setHeaderLabels(self.COLUMNS)
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setColumnWidth(0, 220)
        header = self.header()
        for col in (1, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self._rows: dict[str, QTreeWidgetItem] = {}
        self.roots: list[str] = []  # the knowledge base's sources: names are shown under them

    def show_records(self, records: list[FileRecord]) -> None:
        """The catalogue of a knowledge base: indexed files and skipped ones with reasons."""
        self.clear()
        self._rows.clear()
        for rec in records:
            status = "indexed" if rec.status == "indexed" else "skipped"
            self._put(rec.source, status, rec.chunks, rec.reason, rec.indexed_at)

    def apply_event(self, ev: IndexEvent) -> None:
        """A file event of an indexing run: add or update that file's row."""
        self._put(ev.path, ev.status, ev.file_chunks, ev.reason,
                  time.time() if ev.status in ("indexed", "skipped") else None)

    def _put(self, path: str, status: str, chunks: int, reason: str,
             when: float | None) -> None:
        item = self._rows.get(path)
        if item is None:
            item = QTreeWidgetItem([display_name(path, self.roots), "", "", "", ""])
            item.setToolTip(0, path)
            item.setData(0, Qt.ItemDataRole.UserRole, path)
            self.addTopLevelItem(item)
            self._rows[path] = item
        item.setText(1, STATUS_TEXT.get(status, status))
        item.setText(2, str(chunks) if status in ("indexed", "unchanged") else "")
        if when is not None:
            item.setText(3, format_when(when))
        item.setText(4, reason)
        item.setToolTip(4, reason)
        color = AMBER if status == "skipped" else GREY if status == "removed" else TEXT
        for col in range(len(self.COLUMNS)):
            item.setForeground(col, color)

    def row(self, name_or_path: str) -> dict[str, str] | None:
        """The texts of a file's row, by path or file name (for tests and scripts)."""
        for path, item in self._rows.items():
            if name_or_path in (path, Path(path).name, item.text(0)):
                return dict(zip(self.COLUMNS, (item.text(c) for c in range(5)), strict=True))
        return None

    def selected_sources(self) -> list[str]:
        return [str(i.data(0, Qt.ItemDataRole.UserRole)) for i in self.selectedItems()
                if i.text(1) != STATUS_TEXT["removed"]]

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt API
        if event.key() == Qt.Key.Key_Delete and self.selectedItems():
            self.remove_requested.emit()
            return
        super().keyPressEvent(event)


class SearchPanel(QWidget):
    """Retrieval preview: what chat would get from the knowledge base for a question, and how
    much keywords count against meaning in its hybrid search (kept with the knowledge base)."""

    search_requested = Signal(str, int)
    weight_changed = Signal(float)  #: the user set the keyword weight

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        row = QHBoxLayout()
        self.query = QLineEdit()
        self.query.setPlaceholderText("Search this knowledge base: what would chat retrieve?")
        self.query.setClearButtonEnabled(True)
        self.top_k = QSpinBox()
        self.top_k.setRange(1, 50)
        self.top_k.setValue(5)
        self.top_k.setPrefix("top ")
        self.weight = QDoubleSpinBox()
        self.weight.setRange(0.0, 1.0)
        self.weight.setSingleStep(0.1)
        self.weight.setDecimals(2)
        self.weight.setValue(0.5)
        self.weight.setPrefix("keywords ")
        self.weight.setKeyboardTracking(False)  # typing "0.75" is one change, not four
        self.weight.setToolTip(
            "How much keywords count against meaning when this knowledge base is searched, "
            "here and in chat: 0 searches by meaning only, 1 by keywords only, 0.5 counts both "
            "equally. Saved with the knowledge base.")
        self.button = QPushButton("Search")
        row.addWidget(self.query, 1)
        row.addWidget(self.top_k)
        row.addWidget(self.weight)
        row.addWidget(self.button)
        layout.addLayout(row)
        self.status = QLabel("")
        self.status.setStyleSheet("color: #607d8b;")
        layout.addWidget(self.status)
        self.hits = QTreeWidget()
        self.hits.setObjectName("searchHits")
        self.hits.setHeaderLabels(["#", "Source", "Page", "Score", "Text"])
        self.hits.setRootIsDecorated(False)
        self.hits.setUniformRowHeights(True)
        header = self.hits.header()
        for col in (0, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.hits.setColumnWidth(1, 180)
        self.preview = QPlainTextEdit()
        self.preview.setReadOnly(True)
        self.preview.setPlaceholderText("Select a hit to read the whole chunk.")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.hits)
        split.addWidget(self.preview)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout.addWidget(split, 1)
        self._hits: list[Hit] = []
        self.button.clicked.connect(self._ask)
        self.query.returnPressed.connect(self._ask)
        self.hits.currentItemChanged.connect(lambda *_: self._show_current())
        self.weight.valueChanged.connect(self.weight_changed.emit)

    def show_weight(self, weight: float) -> None:
        """The knowledge base's keyword weight, shown without counting as a change."""
        self.weight.blockSignals(True)
        self.weight.setValue(weight)
        self.weight.blockSignals(False)

    def _ask(self) -> None:
        text = self.query.text().strip()
        if text and self.button.isEnabled():
            self.search_requested.emit(text, self.top_k.value())

    def clear_hits(self, text: str = "") -> None:
        self._hits = []
        self.hits.clear()
        self.preview.clear()
        self.status.setText(text)

    def show_hits(self, query: str, hits: list[Hit]) -> None:
        self.clear_hits(f"{len(hits)} passages for “{query}”" if hits else
                        f"Nothing in this knowledge base matches “{query}”.")
        self._hits = list(hits)
        for n, hit in enumerate(hits, 1):
            snippet = " ".join(hit.text.split())
            item = QTreeWidgetItem([str(n), hit.file_name or Path(hit.source).name,
                                    "" if hit.page is None else str(hit.page),
                                    f"{hit.score:.2f}", snippet[:200]])
            item.setToolTip(1, hit.source)
            item.setToolTip(4, snippet[:1000])
            self.hits.addTopLevelItem(item)
        first = self.hits.topLevelItem(0)
        if first is not None:
            self.hits.setCurrentItem(first)

    def _show_current(self) -> None:
        item = self.hits.currentItem()
        if item is None:
            return
        hit = self._hits[self.hits.indexOfTopLevelItem(item)]
        page = f", page {hit.page}" if hit.page is not None else ""
        self.preview.setPlainText(f"{hit.source}{page} · chunk {hit.chunk_index} · "
                                  f"score {hit.score:.3f}\n\n{hit.text}")


def _row(*widgets: QWidget, stretch_last: bool = False) -> QHBoxLayout:
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        row.addWidget(w)
    if not stretch_last:
        row.addStretch(1)
    return row


class DocumentsLayout(QWidget):
    """The Documents page's widgets, built and arranged (the page adds the behaviour)."""

    def _build(self) -> None:
        title = QLabel("Documents")
        title.setObjectName("pageTitle")
        self.kb_list = QListWidget()
        self.kb_list.setObjectName("kbList")
        self.new_button = QPushButton("New…")
        self.new_button.setToolTip("Create a knowledge base: name, embedder, speed, chunking")
        self.remove_button = QPushButton("Remove")
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(QLabel("Knowledge bases"))
        lv.addWidget(self.kb_list, 1)
        lv.addLayout(_row(self.new_button, self.remove_button))

        self.empty = QLabel(
            "No knowledge bases yet. Drop files or folders here and Corral indexes them into "
            "a new knowledge base, so chat can answer from your documents and cite them. "
            "Or choose New… to pick its embedder and speed first."
        )
        self.empty.setWordWrap(True)
        self.empty.setObjectName("emptyState")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reindex_button = QPushButton("Re-index")
        self.reindex_button.setToolTip("Index what changed in the sources; remove what is gone")
        self.change_embedder_button = QPushButton("Re-index with another embedder…")
        self.change_embedder_button.setToolTip("Switch the embedder or its speed mode: the "
                                               "vectors are rebuilt, never mixed")
        self.watch_button = QPushButton("Watch folders")
        self.watch_button.setCheckable(True)
        self.watch_button.setToolTip("Re-index changed, new and deleted files automatically")
        self.kb_actions = QWidget()
        self.kb_actions.setLayout(_row(self.reindex_button, self.change_embedder_button,
                                    self.watch_button))
        self.drop_zone = DropZone()

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.progress_row = QWidget()
        self.progress_row.setLayout(_row(self.progress, self.cancel_button, stretch_last=True))
        self.progress_row.hide()
        self.progress_text = QLabel("")
        self.progress_text.setWordWrap(True)
        self.note = QLabel("")
        self.note.setObjectName("noteText")
        self.note.setStyleSheet("color: #8d5b00;")
        self.note.setWordWrap(True)
        self.note.hide()
        self.health_text = QLabel("")
        self.health_text.setObjectName("errorText")
        self.health_text.setWordWrap(True)
        self.rebuild_button = QPushButton("Rebuild")
        self.rebuild_button.setToolTip("Drop every vector and index the sources again")
        self.health_row = QFrame()
        hl = QHBoxLayout(self.health_row)
        hl.setContentsMargins(0, 0, 0, 0)
        hl.addWidget(self.health_text, 1)
        hl.addWidget(self.rebuild_button)
        self.health_row.hide()

        self.files = FileList()
        self.remove_file_button = QPushButton("Remove file")
        self.remove_file_button.setToolTip("Remove the selected files' chunks (Delete key)")
        files_tab = QWidget()
        fv = QVBoxLayout(files_tab)
        fv.setContentsMargins(0, 4, 0, 0)
        fv.addWidget(self.files, 1)
        fv.addLayout(_row(self.remove_file_button))
        self.search = SearchPanel()
        self.tabs = QTabWidget()
        self.tabs.addTab(files_tab, "Files")
        self.tabs.addTab(self.search, "Search")

        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        for w in (self.empty, self.info, self.kb_actions, self.drop_zone, self.progress_row,
                  self.progress_text, self.note, self.health_row):
            rv.addWidget(w)
        rv.addWidget(self.tabs, 1)
        rv.addStretch(0)  # takes the room the tabs leave in the empty state
        self._right = rv
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 3)
        split.setSizes([220, 680])
        outer = QVBoxLayout(self)
        outer.addWidget(title)
        outer.addWidget(split, 1)
