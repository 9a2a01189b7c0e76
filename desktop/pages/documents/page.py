"""The Documents page: knowledge bases, a drop zone for files and folders, indexing progress,
the per-file status of each knowledge base, a retrieval preview, and the embedder choice.

Slow work runs in the context's job runner (the functions are in jobs.py); one create/index
job at a time (runs.py), with drops queued meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QListWidgetItem,
    QMessageBox,
    QWidget,
)

from desktop.context import AppContext, describe_error
from desktop.jobs import Worker
from desktop.pages.documents import jobs
from desktop.pages.documents.evaluate import EvaluateTab
from desktop.pages.documents.runs import KEEP_BAR, IndexRunner, Outcome
from desktop.pages.documents.tune import TuneTab
from desktop.pages.documents.widgets import DocumentsLayout, KnowledgeBaseDialog, describe_kb

if TYPE_CHECKING:
    from core.rag.catalogue import FileRecord
    from core.rag.chunker import ChunkParams
    from core.rag.indexing import IndexEvent
    from core.rag.knowledge_base import KnowledgeBaseInfo
    from core.rag.retriever import Hit

WATCH_INTERVAL_MS = 10000
WEIGHT_SETTLE_MS = 400  #: a keyword weight is saved once the spin box rests this long
DEFAULT_NAME = "Documents"


class DocumentsPage(DocumentsLayout):
    indexing_finished = Signal(object)  # the run's summary dict
    knowledge_bases_loaded = Signal(list)
    files_loaded = Signal(str)  # the knowledge base whose files are listed
    settled = Signal()  # no job runs, and the list and files shown are up to date
    kb_created = Signal(object)  # {"name", "notes"}, or {"error"} / {"cancelled"}
    files_removed = Signal(object)  # (files, chunks)
    search_finished = Signal(object)  # the hits
    weight_saved = Signal(str, float)  # the knowledge base and its keyword weight, as stored

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.setAcceptDrops(True)
        self.runner = IndexRunner(ctx, self)
        # This page's job groups: a newer list, files or search supersedes the older one (whose
        # answer is never painted); another Documents page on the same context never does.
        tag = f"{id(self):x}"
        self.list_group = f"documents-list-{tag}"
        self.files_group = f"documents-files-{tag}"
        self.search_group = f"documents-search-{tag}"
        self.weight_group = f"documents-weight-{tag}"
        self._weight_edit: tuple[str, float] | None = None  # waiting to be saved
        self._weight_saving = False
        self._health: dict[str, str] = {}  # knowledge base -> why its health check failed
        self._infos: dict[str, KnowledgeBaseInfo] = {}
        self._select_next = ""
        self._search_kb: str | None = None
        self._watch_turn = 0
        self._build()
        self.evaluate = EvaluateTab(ctx)
        self.tabs.addTab(self.evaluate, "Evaluate")
        self.tune = TuneTab(ctx)
        self.tabs.addTab(self.tune, "Tune")
        self._connect()
        self._update_buttons()
        self.refresh()

    def _connect(self) -> None:
        self.new_button.clicked.connect(lambda: self._ask_new())
        self.remove_button.clicked.connect(self._ask_remove)
        self.reindex_button.clicked.connect(lambda: self.reindex())
        self.change_embedder_button.clicked.connect(self._ask_reindex_with)
        self.watch_button.toggled.connect(self._toggle_watch)
        self.cancel_button.clicked.connect(self.cancel)
        self.rebuild_button.clicked.connect(lambda: self.rebuild())
        self.drop_zone.add_files.clicked.connect(self._pick_files)
        self.drop_zone.add_folder.clicked.connect(self._pick_folder)
        self.kb_list.currentItemChanged.connect(lambda *_: self._show_selected())
        self.files.itemSelectionChanged.connect(self._update_buttons)
        self.files.remove_requested.connect(self._remove_selected_files)
        self.remove_file_button.clicked.connect(self._remove_selected_files)
        self.search.search_requested.connect(self.run_search)
        self.search.weight_changed.connect(self._weight_edited)
        self.weight_timer = QTimer(self)
        self.weight_timer.setSingleShot(True)
        self.weight_timer.setInterval(WEIGHT_SETTLE_MS)
        self.weight_timer.timeout.connect(self.save_weight)
        self.ctx.bus.knowledge_bases_changed.connect(self.refresh)
        r = self.runner
        r.progress.connect(self._on_progress)
        r.index_event.connect(self._on_event)
        r.message.connect(self.progress_text.setText)
        r.created.connect(self._on_created)
        r.finished.connect(self._on_finished)
        r.busy_changed.connect(self._on_busy)
        self.watch_timer = QTimer(self)
        self.watch_timer.setInterval(WATCH_INTERVAL_MS)
        self.watch_timer.timeout.connect(self._watch_tick)

    # --- knowledge bases ---------------------------------------------------------------------

    @property
    def current_kb(self) -> str | None:
        item = self.kb_list.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    @property
    def busy(self) -> bool:
        return self.runner.busy

    def refresh(self) -> None:
        self.ctx.jobs.run(jobs.list_job, self.ctx.settings, group=self.list_group,
                          on_result=self._show_kbs)

    def _show_kbs(self, infos: list[KnowledgeBaseInfo]) -> None:
        keep = self._select_next or self.current_kb
        self._select_next = ""
        self._infos = {i.name: i for i in infos}
        self.kb_list.blockSignals(True)
        self.kb_list.clear()
        for info in infos:
            item = QListWidgetItem(f"{info.name}\n{info.chunks} chunks · {info.mode}")
            item.setToolTip(f"{info.files} files, {info.embedder} ({info.mode} mode)")
            item.setData(Qt.ItemDataRole.UserRole, info.name)
            self.kb_list.addItem(item)
            if info.name == keep:
                self.kb_list.setCurrentItem(item)
        if self.kb_list.currentItem() is None and infos:
            self.kb_list.setCurrentRow(0)
        self.kb_list.blockSignals(False)
        self._show_selected()
        if any(i.watch for i in infos):
            self.watch_timer.start()
        self.knowledge_bases_loaded.emit(infos)
        if not infos and not self.busy:
            self.settled.emit()

    def _show_selected(self) -> None:
        if self.weight_timer.isActive():  # an edit for the knowledge base left behind
            self.weight_timer.stop()
            self.save_weight()
        name = self.current_kb
        info = self._infos.get(name or "")
        self.empty.setVisible(not self._infos)
        self.drop_zone.setMinimumHeight(0 if self._infos else 180)
        self._right.setStretch(self._right.count() - 1, 0 if info is not None else 1)
        for w in (self.info, self.kb_actions, self.tabs):
            w.setVisible(info is not None)
        if info is None:
            self.info.setText("")
            self.files.show_records([])
        else:
            self.info.setText(describe_kb(info))
            self.search.show_weight(info.hybrid_weight)
            self.files.roots = list(info.sources)
            self.watch_button.blockSignals(True)
            self.watch_button.setChecked(info.watch)
            self.watch_button.blockSignals(False)
            self._load_files(info.name)
        reason = self._health.get(name or "", "")
        self.health_text.setText(reason)
        self.health_row.setVisible(bool(reason))
        if self._search_kb != name:
            self._search_kb = name
            self.ctx.jobs.drop(self.search_group)  # its answer is for the other one
            self.search.clear_hits()
        self.evaluate.set_kb(name if info is not None else None)
        self.tune.set_kb(name if info is not None else None)
        self._update_buttons()

    def _load_files(self, name: str) -> None:
        self.ctx.jobs.run(jobs.files_job, self.ctx.settings, name, group=self.files_group,
                          on_result=self._show_files)

    def _show_files(self, result: tuple[str, list[FileRecord]]) -> None:
        name, records = result
        if name != self.current_kb:
            return
        self.files.show_records(records)
        self.files_loaded.emit(name)
        if not self.busy:
            self.settled.emit()

    def _update_buttons(self) -> None:
        name = self.current_kb
        has = name is not None
        working_here = self.busy and name == self.runner.kb
        self.remove_button.setEnabled(has and not working_here)
        for b in (self.reindex_button, self.change_embedder_button, self.rebuild_button):
            b.setEnabled(has and not self.busy)
        self.watch_button.setEnabled(has)
        self.remove_file_button.setEnabled(
            has and not working_here and bool(self.files.selected_sources()))
        self.search.button.setEnabled(has)
        self.cancel_button.setEnabled(self.busy)

    def create_kb(self, name: str, spec: str | None = None, mode: str | None = None,
                  params: ChunkParams | None = None, paths: list[str] | None = None,
                  exist_ok: bool = False) -> Worker[Outcome] | None:
        """Create a knowledge base (fast/fastest: export the model first), then index
        ``paths`` into it. The embedder and mode default to the settings'."""
        s = self.ctx.settings.embedder
        self._show_notes([])
        return self.runner.create(name, spec or s.default or "minilm",
                                  mode or s.mode or "standard", params, paths, exist_ok)

    def _on_created(self, result: Outcome) -> None:
        if "name" in result:
            self._select_next = result["name"]
            self._show_notes(result["notes"])
            self.ctx.bus.knowledge_bases_changed.emit()
        self.kb_created.emit(result)

    def _ask_new(self) -> None:
        s = self.ctx.settings.embedder
        dialog = KnowledgeBaseDialog(name="" if self._infos else DEFAULT_NAME,
                                     spec=s.default, mode=s.mode, parent=self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            name, spec, mode, params = dialog.values()
            self.create_kb(name, spec, mode, params)

    def remove_kb(self, name: str) -> Worker[str]:
        self._health.pop(name, None)
        return self.ctx.jobs.run(jobs.remove_kb_job, self.ctx.settings, name,
                                 on_result=lambda _n: self.ctx.bus.knowledge_bases_changed.emit())

    def _ask_remove(self) -> None:
        name = self.current_kb
        if name and self._confirm(f"Remove the knowledge base '{name}' and all its vectors? "
                                  "The files themselves stay where they are."):
            self.remove_kb(name)

    def _confirm(self, text: str) -> bool:
        answer = QMessageBox.question(self, "Corral", text)
        return answer == QMessageBox.StandardButton.Yes

    def remove_files(self, sources: list[str]) -> Worker[tuple[int, int]] | None:
        """Remove files' chunks from the selected knowledge base (they stay out of re-index
        runs of their folder until dropped again)."""
        name = self.current_kb
        if not name or not sources:
            return None

        def done(result: tuple[int, int]) -> None:
            files, chunks = result
            what = Path(sources[0]).name if files == 1 else f"{files} files"
            self.progress_text.setText(
                f"Removed {what} ({chunks} chunk{'' if chunks == 1 else 's'}) from '{name}'. "
                f"Drop {'it' if files == 1 else 'them'} again to add {'it' if files == 1 else 'them'} back.")
            self.files_removed.emit(result)
            self.ctx.bus.knowledge_bases_changed.emit()

        return self.ctx.jobs.run(jobs.remove_files_job, self.ctx.settings, name, list(sources),
                                 on_result=done)

    def _remove_selected_files(self) -> None:
        if self.remove_file_button.isEnabled():
            self.remove_files(self.files.selected_sources())

    def _toggle_watch(self, on: bool) -> None:
        name = self.current_kb
        if not name:
            return
        self.ctx.jobs.run(jobs.set_watch_job, self.ctx.settings, name, on,
                          on_result=lambda _r: self.ctx.bus.knowledge_bases_changed.emit())
        if on:
            self.watch_timer.start()

    def _watch_tick(self) -> None:
        watched = [n for n, i in self._infos.items() if i.watch]
        if not watched:
            self.watch_timer.stop()
        elif not self.busy:
            self._watch_turn = (self._watch_turn + 1) % len(watched)
            self.runner.index(watched[self._watch_turn], None, only_if_changed=True)

    # --- drops ------------------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 - Qt API
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

    def add_paths(self, paths: list[str]) -> Worker[Outcome] | None:
        """Index dropped or picked paths into the selected knowledge base (or a new one with
        the settings' embedder). While a job runs, the drop waits its turn."""
        paths = [str(Path(p).absolute()) for p in paths]
        name = self.runner.kb if self.runner.creating else self.current_kb
        if self.busy:
            self.ctx.status(self.runner.enqueue(name or DEFAULT_NAME, paths))
            return None
        self._show_notes([])
        if name is None:
            return self.create_kb(DEFAULT_NAME, paths=paths, exist_ok=True)
        return self.runner.index(name, paths)

    # --- indexing ---------------------------------------------------------------------------

    def reindex(self) -> Worker[Outcome] | None:
        name = self.current_kb
        self._show_notes([])
        return self.runner.index(name, None) if name else None

    def rebuild(self, name: str | None = None) -> Worker[Outcome] | None:
        """Drop every vector of the knowledge base and index its sources again."""
        info = self._infos.get(name or self.current_kb or "")
        if info is None:
            return None
        self._show_notes([])
        return self.runner.index(info.name, None, rebuild=(info.embedder_spec, info.mode, None))

    def reindex_with(self, spec: str, mode: str, params: ChunkParams | None = None,
                     name: str | None = None) -> Worker[Outcome] | None:
        """Rebuild with another embedder or speed mode (fast/fastest: export first)."""
        name = name or self.current_kb
        self._show_notes([])
        return self.runner.index(name, None, rebuild=(spec, mode, params)) if name else None

    def _ask_reindex_with(self) -> None:
        info = self._infos.get(self.current_kb or "")
        if info is None:
            return
        dialog = KnowledgeBaseDialog(
            name=None, spec=info.embedder_spec, mode=info.mode, chunk_tokens=info.chunk_tokens,
            overlap_tokens=info.overlap_tokens, title=f"Re-index '{info.name}'",
            accept_text="Re-index…", parent=self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return
        _name, spec, mode, params = dialog.values()
        if self._confirm(
            f"Re-index '{info.name}' with {spec} in {mode} mode? Its {info.chunks} chunks are "
            "dropped and its sources are indexed again, so two embedders' vectors never mix."
        ):
            self.reindex_with(spec, mode, params, info.name)

    def cancel(self) -> None:
        self.runner.cancel()

    def _on_busy(self, busy: bool) -> None:
        self.progress_row.setVisible(busy and not self.runner.quiet)
        if busy and not self.runner.quiet:
            self._begin_visible_run()
        self._update_buttons()

    def _begin_visible_run(self) -> None:
        name = self.runner.kb
        if name == self.current_kb:  # new files are named under the folders they came in
            self.files.roots += self.runner.paths
        self._health.pop(name, None)
        if name == self.current_kb:
            self.health_row.hide()

    def _on_progress(self, fraction: float, text: str) -> None:
        self.progress_row.show()
        if fraction == KEEP_BAR:
            pass
        elif fraction < 0:
            self.progress.setRange(0, 0)  # busy: no measure yet
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(fraction * 1000))
        where = self.runner.kb
        prefix = f"'{where}': " if where and where != self.current_kb else ""
        self.progress_text.setText(prefix + text)

    def _on_event(self, ev: IndexEvent) -> None:
        name = self.runner.kb
        if ev.kind == "file" and name == self.current_kb:
            self.files.apply_event(ev)
        elif ev.kind == "health" and not ev.ok:
            self._health[name] = ev.reason[:1].upper() + ev.reason[1:].rstrip(".") + "."
            if name == self.current_kb:
                self.health_text.setText(self._health[name])
                self.health_row.show()

    def _on_finished(self, summary: Outcome) -> None:
        if not summary.get("quiet"):
            if summary.get("notes"):
                self._show_notes(summary["notes"])
            self.ctx.bus.knowledge_bases_changed.emit()
        self.indexing_finished.emit(summary)

    def _show_notes(self, notes: list[str]) -> None:
        text = " ".join(n for n in notes if n)
        self.note.setText(text)
        self.note.setVisible(bool(text))
        if text:
            self.ctx.status(text, 10000)

    # --- retrieval preview ------------------------------------------------------------------

    def run_search(self, query: str, k: int = 5) -> Worker[tuple[str, list[Hit]]] | None:
        """What chat would retrieve from the selected knowledge base (in a worker).

        A newer search supersedes it, and selecting another knowledge base drops it: neither
        is ever painted."""
        name = self.current_kb
        if not name or not query.strip():
            return None
        self.tabs.setCurrentWidget(self.search)
        self.search.query.setText(query)
        self.search.clear_hits("Searching…")
        status = self.search.status
        # A cancelled search shows nothing it found: the user moved on or closed the page.
        return self.ctx.jobs.run(jobs.search_job, self.ctx.settings, name, query, k,
                                 group=self.search_group,
                                 on_progress=lambda _f, text: status.setText(text),
                                 on_result=self._show_hits,
                                 on_error=lambda exc: status.setText(describe_error(exc)),
                                 on_cancelled=lambda _p: status.setText("Search cancelled."))

    # --- keyword weight ----------------------------------------------------------------------

    def _weight_edited(self, weight: float) -> None:
        if self.current_kb:
            self._weight_edit = (self.current_kb, weight)
            self.weight_timer.start()

    def save_weight(self) -> None:
        """Store the edited keyword weight (one write at a time, in order; the newest wins),
        then search again with it if a question is in the box."""
        if self._weight_edit is None or self._weight_saving:
            return
        name, weight = self._weight_edit
        self._weight_edit = None
        info = self._infos.get(name)
        if info is None or info.hybrid_weight == weight:
            return
        self._weight_saving = True

        def saved(result: tuple[str, float]) -> None:
            kb, stored = result
            if kb in self._infos:
                self._infos[kb].hybrid_weight = stored
            if kb == self.current_kb:
                self.info.setText(describe_kb(self._infos[kb]))
                if self.search.query.text().strip():
                    self.run_search(self.search.query.text(), self.search.top_k.value())
            self.weight_saved.emit(kb, stored)

        def failed(exc: BaseException) -> None:
            self.search.status.setText(describe_error(exc))
            if name == self.current_kb and name in self._infos:
                self.search.show_weight(self._infos[name].hybrid_weight)

        def done() -> None:
            self._weight_saving = False
            self.save_weight()  # an edit made while this one was being written

        self.ctx.jobs.run(jobs.set_weight_job, self.ctx.settings, name, weight,
                          group=self.weight_group, on_result=saved, on_error=failed,
                          on_done=done)

    def _show_hits(self, result: tuple[str, list[Hit]]) -> None:
        query, hits = result
        self.search.show_hits(query, hits)
        self.search_finished.emit(hits)

    def shutdown(self) -> None:
        """The page goes: stop its work, and paint nothing more (its widgets go with it)."""
        self.watch_timer.stop()
        self.weight_timer.stop()
        if self._weight_edit is not None:  # an edit still settling is saved, not lost
            self.ctx.jobs.run(jobs.set_weight_job, self.ctx.settings, *self._weight_edit)
            self._weight_edit = None
        self.ctx.jobs.drop(self.weight_group)
        self.runner.queue.clear()
        self.runner.cancel()
        self.ctx.jobs.drop(self.search_group)
        self.evaluate.shutdown()
        self.tune.shutdown()
