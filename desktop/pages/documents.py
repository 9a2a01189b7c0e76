"""The Documents page: knowledge bases, a drop zone for files and folders, indexing progress
with a per-file status list, cancel, remove, re-index and watch. Slow work runs in workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.context import AppContext, describe_error
from desktop.worker import Job, Worker

WATCH_INTERVAL_MS = 10000
STATUS_TEXT = {"indexed": "Indexed", "unchanged": "Unchanged", "skipped": "Skipped",
               "removed": "Removed"}


# --- job functions (run in the thread pool; no widgets here) ---------------------------------


def _list_job(job: Job, settings: Any) -> list[Any]:
    from core.rag.knowledge_base import list_kbs

    return list_kbs(settings=settings)


def _create_job(job: Job, settings: Any, name: str) -> str:
    from core.rag.knowledge_base import create_kb

    create_kb(name, settings=settings).close()
    return name


def _remove_job(job: Job, settings: Any, name: str) -> str:
    from core.rag.knowledge_base import remove_kb

    remove_kb(name, settings=settings)
    return name


def _index_job(job: Job, settings: Any, name: str, paths: list[str] | None,
               create: bool = False, only_if_changed: bool = False) -> dict[str, Any]:
    """Index ``paths`` (None: the knowledge base's own sources) and report every event."""
    from core.rag.indexing import IndexJob, has_changes
    from core.rag.knowledge_base import create_kb, open_kb

    job.progress(None, "Opening the knowledge base…")
    if create:
        kb = create_kb(name, settings=settings, exist_ok=True)
    else:
        kb = open_kb(name, settings=settings)
    summary: dict[str, Any] = {"kb": name, "indexed": 0, "unchanged": 0, "skipped": 0,
                               "removed": 0, "chunks": 0, "cancelled": False, "health": True}
    try:
        roots = paths if paths is not None else kb.catalogue.sources()
        if not roots or (only_if_changed and not has_changes(kb, roots)):
            return summary
        job.progress(None, "Loading the embedding model…")
        emb = kb.embedder()
        job.check()
        index = IndexJob(kb, roots, embedder=emb, stop_when=lambda: job.cancelled)
        for ev in index:
            if ev.kind == "file":
                summary[ev.status] = summary.get(ev.status, 0) + 1
            elif ev.kind == "health":
                summary["health"] = ev.ok
                summary["health_reason"] = ev.reason
            elif ev.kind == "cancelled":
                summary["cancelled"] = True
            summary["chunks"] = ev.chunks
            job.partial(ev)
        return summary
    finally:
        kb.close()


def _describe_progress(ev: Any) -> str:
    eta = ""
    if ev.eta_s is not None:
        m, s = divmod(int(ev.eta_s + 0.5), 60)
        eta = f" · ETA {m}:{s:02d}"
    return (f"{ev.files_done}/{ev.files_total} files · {ev.chunks} chunks · "
            f"{ev.chunks_per_s:.1f} chunks/s{eta}")


# --- widgets ----------------------------------------------------------------------------------


class DropZone(QFrame):
    """Where files and folders are dropped (the whole page accepts drops too)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("dropZone")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setMinimumHeight(90)
        layout = QVBoxLayout(self)
        self.label = QLabel("Drop files or folders here to index them\n"
                            "(text, Markdown, code, HTML, PDF, DOCX, CSV)")
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.label)
        row = QHBoxLayout()
        row.addStretch(1)
        self.add_files = QPushButton("Add files…")
        self.add_folder = QPushButton("Add folder…")
        row.addWidget(self.add_files)
        row.addWidget(self.add_folder)
        row.addStretch(1)
        layout.addLayout(row)


class DocumentsPage(QWidget):
    indexing_finished = Signal(object)  # the run's summary dict
    knowledge_bases_loaded = Signal(list)

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.setAcceptDrops(True)
        self._index_worker: Worker | None = None
        self._infos: dict[str, Any] = {}

        self.kb_list = QListWidget()
        self.kb_list.setObjectName("kbList")
        self.new_button = QPushButton("New…")
        self.remove_button = QPushButton("Remove")
        self.reindex_button = QPushButton("Re-index")
        self.watch_button = QPushButton("Watch folders")
        self.watch_button.setCheckable(True)
        self.watch_button.setToolTip("Re-index changed, new and deleted files automatically")
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.addWidget(QLabel("Knowledge bases"))
        lv.addWidget(self.kb_list, 1)
        buttons = QHBoxLayout()
        for b in (self.new_button, self.remove_button):
            buttons.addWidget(b)
        lv.addLayout(buttons)
        buttons2 = QHBoxLayout()
        for b in (self.reindex_button, self.watch_button):
            buttons2.addWidget(b)
        lv.addLayout(buttons2)

        self.empty = QLabel(
            "No knowledge bases yet. Drop files or folders here and Corral indexes them into "
            "a new knowledge base, so chat can answer from your documents and cite them."
        )
        self.empty.setWordWrap(True)
        self.empty.setObjectName("emptyState")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.drop_zone = DropZone()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress_text = QLabel("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        prow = QHBoxLayout()
        prow.addWidget(self.progress, 1)
        prow.addWidget(self.cancel_button)
        self.files = QTreeWidget()
        self.files.setObjectName("fileStatus")
        self.files.setHeaderLabels(["File", "Status", "Chunks", "Reason"])
        self.files.setRootIsDecorated(False)
        self.files.setColumnWidth(0, 240)
        self.files.setColumnWidth(1, 90)
        self.files.setColumnWidth(2, 60)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.addWidget(self.empty)
        rv.addWidget(self.info)
        rv.addWidget(self.drop_zone)
        rv.addLayout(prow)
        rv.addWidget(self.progress_text)
        rv.addWidget(self.files, 1)

        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 3)
        outer = QVBoxLayout(self)
        outer.addWidget(split)

        self.new_button.clicked.connect(self._ask_new)
        self.remove_button.clicked.connect(self._ask_remove)
        self.reindex_button.clicked.connect(lambda: self.reindex())
        self.watch_button.toggled.connect(self._toggle_watch)
        self.cancel_button.clicked.connect(self.cancel)
        self.drop_zone.add_files.clicked.connect(self._pick_files)
        self.drop_zone.add_folder.clicked.connect(self._pick_folder)
        self.kb_list.currentItemChanged.connect(lambda *_: self._show_selected())
        self.ctx.bus.knowledge_bases_changed.connect(self.refresh)

        self.watch_timer = QTimer(self)
        self.watch_timer.setInterval(WATCH_INTERVAL_MS)
        self.watch_timer.timeout.connect(self._watch_tick)
        self._update_buttons()
        self.refresh()

    # --- knowledge bases ---------------------------------------------------------------------

    @property
    def current_kb(self) -> str | None:
        item = self.kb_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def refresh(self) -> None:
        w = Worker(_list_job, self.ctx.settings)
        w.signals.finished.connect(self._show_kbs)
        w.signals.failed.connect(self.ctx.show_error)
        self.ctx.jobs.start(w, group="documents-list")

    def _show_kbs(self, infos: list[Any]) -> None:
        keep = self.current_kb
        self._infos = {i.name: i for i in infos}
        self.kb_list.clear()
        for info in infos:
            item = QListWidgetItem(f"{info.name}  ({info.chunks} chunks)")
            item.setData(Qt.ItemDataRole.UserRole, info.name)
            self.kb_list.addItem(item)
            if info.name == keep or keep is None:
                self.kb_list.setCurrentItem(item)
                keep = info.name
        self.empty.setVisible(not infos)
        self._show_selected()
        if any(i.watch for i in infos):
            self.watch_timer.start()
        self.knowledge_bases_loaded.emit(infos)

    def _show_selected(self) -> None:
        info = self._infos.get(self.current_kb or "")
        if info is None:
            self.info.setText("")
        else:
            self.info.setText(
                f"<b>{info.name}</b>: {info.chunks} chunks from {info.files} files "
                f"({info.skipped} skipped) · {info.embedder} ({info.mode}) · "
                f"{info.chunk_tokens}-token chunks<br>Sources: {', '.join(info.sources) or '—'}"
            )
            self.watch_button.blockSignals(True)
            self.watch_button.setChecked(info.watch)
            self.watch_button.blockSignals(False)
        self._update_buttons()

    def _update_buttons(self) -> None:
        has = self.current_kb is not None
        busy = self._index_worker is not None
        self.remove_button.setEnabled(has and not busy)
        self.reindex_button.setEnabled(has and not busy)
        self.watch_button.setEnabled(has)
        self.cancel_button.setEnabled(busy)

    def create_kb(self, name: str) -> Worker:
        w = Worker(_create_job, self.ctx.settings, name)
        w.signals.finished.connect(lambda _n: self.ctx.bus.knowledge_bases_changed.emit())
        w.signals.failed.connect(self.ctx.show_error)
        return self.ctx.jobs.start(w)

    def _ask_new(self) -> None:
        name, ok = QInputDialog.getText(self, "New knowledge base", "Name:")
        if ok and name.strip():
            self.create_kb(name.strip())

    def remove_kb(self, name: str) -> Worker:
        w = Worker(_remove_job, self.ctx.settings, name)
        w.signals.finished.connect(lambda _n: self.ctx.bus.knowledge_bases_changed.emit())
        w.signals.failed.connect(self.ctx.show_error)
        return self.ctx.jobs.start(w)

    def _ask_remove(self) -> None:
        name = self.current_kb
        if name and self._confirm(f"Remove the knowledge base '{name}' and all its vectors?"):
            self.remove_kb(name)

    def _confirm(self, text: str) -> bool:
        answer = QMessageBox.question(self, "Corral", text)
        return answer == QMessageBox.StandardButton.Yes

    def _toggle_watch(self, on: bool) -> None:
        name = self.current_kb
        if not name:
            return

        def set_watch(job: Job, settings: Any, kb_name: str, value: bool) -> None:
            from core.rag.knowledge_base import open_kb

            kb = open_kb(kb_name, settings=settings)
            kb.watch = value
            kb.close()

        w = Worker(set_watch, self.ctx.settings, name, on)
        w.signals.finished.connect(lambda _r: self.ctx.bus.knowledge_bases_changed.emit())
        w.signals.failed.connect(self.ctx.show_error)
        self.ctx.jobs.start(w)
        if on:
            self.watch_timer.start()

    def _watch_tick(self) -> None:
        watched = [n for n, i in self._infos.items() if i.watch]
        if not watched:
            self.watch_timer.stop()
        elif self._index_worker is None:
            self._start_index(watched[0], None, only_if_changed=True)

    # --- indexing ---------------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt API
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.add_paths(paths)

    def _pick_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add files to the knowledge base")
        if files:
            self.add_paths(files)

    def _pick_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder to the knowledge base")
        if folder:
            self.add_paths([folder])

    def add_paths(self, paths: list[str]) -> Worker | None:
        """Index dropped or picked paths into the selected knowledge base (or a new one)."""
        name = self.current_kb
        create = name is None
        if name is None:
            name = "Documents"
        return self._start_index(name, [str(Path(p)) for p in paths], create=create)

    def reindex(self) -> Worker | None:
        name = self.current_kb
        return self._start_index(name, None) if name else None

    def _start_index(self, name: str, paths: list[str] | None, *, create: bool = False,
                     only_if_changed: bool = False) -> Worker | None:
        if self._index_worker is not None:
            self.ctx.status("Indexing is already running; wait for it or cancel it.")
            return None
        if not only_if_changed:
            self.files.clear()
            self.progress.setValue(0)
        w = Worker(_index_job, self.ctx.settings, name, paths, create, only_if_changed)
        w.signals.partial.connect(self._on_event)
        w.signals.progress.connect(lambda _f, text: self.progress_text.setText(text))
        w.signals.finished.connect(self._on_finished)
        w.signals.failed.connect(self._on_failed)
        self._index_worker = w
        self._update_buttons()
        return self.ctx.jobs.start(w, group="documents-index")

    def cancel(self) -> None:
        if self._index_worker is not None:
            self._index_worker.cancel()
            self.progress_text.setText("Cancelling… (finished files are kept)")

    def _on_event(self, ev: Any) -> None:
        self.progress.setValue(int(ev.fraction * 1000))
        self.progress_text.setText(_describe_progress(ev))
        if ev.kind == "file":
            item = QTreeWidgetItem([Path(ev.path).name, STATUS_TEXT.get(ev.status, ev.status),
                                    str(ev.file_chunks) if ev.status != "skipped" else "",
                                    ev.reason])
            item.setToolTip(0, ev.path)
            item.setData(0, Qt.ItemDataRole.UserRole, ev.path)
            item.setToolTip(3, ev.reason)
            self.files.addTopLevelItem(item)
        elif ev.kind == "health" and not ev.ok:
            self.ctx.show_error(ev.reason)

    def _on_finished(self, summary: dict[str, Any]) -> None:
        self._index_worker = None
        self._update_buttons()
        if summary.get("cancelled"):
            text = "Cancelled. Drop the same files again to resume where it stopped."
        else:
            self.progress.setValue(1000)
            text = (f"Done: {summary['indexed']} indexed, {summary['unchanged']} unchanged, "
                    f"{summary['skipped']} skipped, {summary['removed']} removed.")
        self.progress_text.setText(text)
        self.ctx.bus.knowledge_bases_changed.emit()
        self.indexing_finished.emit(summary)

    def _on_failed(self, exc: object) -> None:
        from core.errors import Cancelled

        self._index_worker = None
        if isinstance(exc, Cancelled):
            self.progress_text.setText("Cancelled.")
            self._update_buttons()
            self.indexing_finished.emit({"cancelled": True})
            return
        self._update_buttons()
        self.progress_text.setText(describe_error(exc))  # type: ignore[arg-type]
        self.ctx.show_error(exc)  # type: ignore[arg-type]
        self.indexing_finished.emit({"error": describe_error(exc)})  # type: ignore[arg-type]
