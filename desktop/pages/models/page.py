"""Models page: every model in one table (Ollama server, Ollama store, GGUF files), with pull,
delete, import, a detail panel (GGUF metadata, chat template, Modelfile parts, SHA-256) and
what is loaded in memory now, with Unload.

All slow work (listing, pulls, imports, hashing, inspecting, unloading) runs through
``ctx.jobs.run`` (the job functions: jobs.py); the page only turns clicks into core calls and
results into widgets (beside it: the detail panel in widgets.py, the pull bar in pull.py, the
loaded models in loaded.py).
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.config import Settings
from core.units import human_size
from desktop.context import AppContext, describe_error
from desktop.jobs import Worker
from desktop.pages.models import jobs
from desktop.pages.models.loaded import LoadedPanel
from desktop.pages.models.pull import PullBar
from desktop.pages.models.widgets import DetailPanel

if TYPE_CHECKING:
    from core.models.catalog import ModelEntry, ModelList
    from core.models.library import ImportedModel, ImportFailure

COLUMNS = ["Name", "Source", "Family", "Parameters", "Quantization", "Size", "Context", "Loaded"]


class ModelsPage(QWidget):
    """The Models page (see module docstring)."""

    refreshed = Signal()  # the table shows a fresh list
    detail_shown = Signal(str)  # the detail panel shows this ref

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.entries: list[ModelEntry] = []
        #: the model whose detail the panel shows (or is reading); late results for another
        #: model are dropped
        self.detail_ref: str | None = None
        self.setAcceptDrops(True)
        self._build()
        ctx.bus.models_changed.connect(self.refresh)
        ctx.bus.settings_changed.connect(self.refresh)
        self.refresh()

    # --- layout ----------------------------------------------------------------------

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        head = QHBoxLayout()
        title = QLabel("Models")
        title.setObjectName("pageTitle")
        head.addWidget(title)
        head.addStretch(1)
        self.refresh_button = QPushButton("Refresh")
        self.import_file_button = QPushButton("Import GGUF file…")
        self.import_folder_button = QPushButton("Import folder…")
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setEnabled(False)
        for b in (self.refresh_button, self.import_file_button, self.import_folder_button,
                  self.delete_button):
            head.addWidget(b)
        outer.addLayout(head)

        self.pull = PullBar(self.ctx)
        outer.addWidget(self.pull)
        self.pull_status = QLabel("")
        self.pull_status.setWordWrap(True)
        self.pull_status.hide()
        outer.addWidget(self.pull_status)

        self.notice = QLabel("")
        self.notice.setObjectName("emptyState")
        self.notice.setWordWrap(True)
        self.notice.hide()
        outer.addWidget(self.notice)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setSortingEnabled(False)
        self.empty = QLabel("Looking for models…")
        self.empty.setObjectName("emptyState")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.table_stack = QStackedWidget()
        self.table_stack.addWidget(self.empty)
        self.table_stack.addWidget(self.table)
        self.detail = DetailPanel()
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table_stack)
        split.addWidget(self.detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        outer.addWidget(split, 1)
        self.loaded = LoadedPanel(self.ctx)
        outer.addWidget(self.loaded)

        self.refresh_button.clicked.connect(self.refresh)
        self.import_file_button.clicked.connect(self.choose_files)
        self.import_folder_button.clicked.connect(self.choose_folder)
        self.delete_button.clicked.connect(self.delete_selected)
        self.pull.status.connect(self._status)
        self.pull.ended.connect(self._pull_ended)
        self.loaded.unloaded.connect(lambda _path: self.ctx.bus.models_changed.emit())
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.detail.chat_button.clicked.connect(self._chat_with_selected)
        self.detail.sha_button.clicked.connect(self._compute_sha)

    def _status(self, text: str) -> None:
        self.pull_status.setText(text)
        self.pull_status.setVisible(bool(text))

    def _settings(self) -> Settings:
        """A copy for a worker: the user may change the settings while it runs."""
        return copy.deepcopy(self.ctx.settings)

    def host(self) -> str:
        from core.models.ollama_host import resolve_host

        return resolve_host(self.ctx.settings.ollama.host)

    # --- listing ---------------------------------------------------------------------

    def refresh(self) -> Worker[ModelList]:
        self.loaded.refresh()
        return self.ctx.jobs.run(jobs.list_job, self._settings(), group="models-list",
                                 on_result=self._show_list, on_error=self._list_failed)

    def _list_failed(self, exc: BaseException) -> None:
        sentence = self.ctx.show_error(exc)
        self.empty.setText(sentence)
        self.table_stack.setCurrentWidget(self.empty)
        self.refreshed.emit()

    def _show_list(self, result: ModelList) -> None:
        selected = self.selected_entry()
        self.table.blockSignals(True)
        self.table.clearSelection()
        self.entries = list(result.models)
        self.table.setRowCount(len(self.entries))
        for row, m in enumerate(self.entries):
            values = [m.name, m.source_label, m.family or "–", m.parameter_size or "–",
                      m.quantization or "–", human_size(m.file_size, empty="–"),
                      str(m.context_length) if m.context_length else "–",
                      "● loaded" if m.loaded else ""]
            for col, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setData(Qt.ItemDataRole.UserRole, m.ref)
                tip = m.ref + (f"\nProblem: {m.problem}" if m.problem else "")
                if m.also:
                    tip += "\nAlso runnable through llama.cpp as " + ", ".join(m.also)
                item.setToolTip(tip)
                if m.problem:
                    item.setForeground(QColor("#c62828"))
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        notes = [n if n.endswith(".") else n + "." for n in result.notes]
        self.notice.setText("\n".join(notes))
        self.notice.setVisible(bool(notes))
        if self.entries:
            self.table_stack.setCurrentWidget(self.table)
        else:
            lines = ["No models yet."]
            if not result.ollama_running:
                lines.append(f"Ollama is not running at {result.host} — start it or change the "
                             "host in Settings.")
            lines.append("Pull an Ollama model above, or import a GGUF file or a folder of them "
                         "(you can also drop .gguf files here).")
            self.empty.setText("\n\n".join(lines))
            self.table_stack.setCurrentWidget(self.empty)
        self.table.clearSelection()
        self.table.blockSignals(False)
        if selected is not None and self.row_of(selected.ref) >= 0:
            self.select_ref(selected.ref)
        else:
            self._clear_detail()
            self.delete_button.setEnabled(False)
        self.refreshed.emit()

    def refs(self) -> list[str]:
        return [m.ref for m in self.entries]

    def row_of(self, ref: str) -> int:
        return next((i for i, m in enumerate(self.entries) if m.ref == ref), -1)

    def select_ref(self, ref: str) -> None:
        row = self.row_of(ref)
        if row >= 0:
            self.table.selectRow(row)

    def selected_entry(self) -> ModelEntry | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        row = rows[0].row()
        return self.entries[row] if 0 <= row < len(self.entries) else None

    # --- details ---------------------------------------------------------------------

    def _selection_changed(self) -> None:
        entry = self.selected_entry()
        can_delete = entry is not None and entry.source in ("ollama", "gguf")
        self.delete_button.setEnabled(can_delete)
        self.delete_button.setToolTip(
            "Corral never writes into Ollama's store on disk; with Ollama running, delete the "
            "server's copy." if entry is not None and entry.source == "store" else "")
        if entry is None:
            self._clear_detail()
            return
        self._clear_detail(f"{entry.name} — reading…")
        self.detail_ref = entry.ref
        if entry.problem:
            self.detail.show_error(f"{entry.name} — {entry.source_label}",
                                   f"This model cannot be used: {entry.problem}.")
            self.detail_shown.emit(entry.ref)
            return
        # A newer inspect supersedes this one: the model clicked before never paints over it.
        self.ctx.jobs.run(jobs.inspect_job, entry.ref, self._settings(), group="models-detail",
                          on_result=partial(self._show_detail, entry),
                          on_error=partial(self._detail_failed, entry))

    def _clear_detail(self, text: str = "Select a model to see its details.") -> None:
        """Empty the panel and stop the work for the model it showed."""
        self.detail_ref = None
        # what the work for the model shown before would paint no longer applies
        self.ctx.jobs.drop("models-detail")
        self.ctx.jobs.drop("models-sha")
        self.detail.sha_button.setEnabled(True)
        self.detail.clear(text)

    def _show_detail(self, entry: ModelEntry, info: dict[str, Any]) -> None:
        self.detail.show_info(entry, info)
        self.detail_shown.emit(entry.ref)

    def _detail_failed(self, entry: ModelEntry, exc: BaseException) -> None:
        self.detail.show_error(f"{entry.name} — {entry.source_label}", describe_error(exc))
        self.detail_shown.emit(entry.ref)

    def _chat_with_selected(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            self.ctx.bus.open_chat.emit(entry.ref)

    def _compute_sha(self) -> Worker[str] | None:
        entry = self.selected_entry()
        if entry is None or not entry.path or entry.ref != self.detail_ref:
            return None
        self.detail.sha_button.setEnabled(False)
        return self.ctx.jobs.run(jobs.sha256_job, entry.path, group="models-sha",
                                 on_progress=self._sha_progress, on_result=self._sha_done,
                                 on_error=self._sha_failed, on_cancelled=self._sha_cancelled)

    def _sha_progress(self, fraction: float | None, _text: str) -> None:
        shown = "" if fraction is None else f" {fraction * 100:.0f}%"
        self.detail.sha.setText(f"SHA-256: computing…{shown}")

    def _sha_done(self, digest: str) -> None:
        self.detail.sha.setText(f"SHA-256: {digest}")
        self.detail.sha_button.hide()
        self.detail.sha_button.setEnabled(True)

    def _sha_failed(self, exc: BaseException) -> None:
        self.detail.sha_button.setEnabled(True)
        self.detail.sha.setText(f"SHA-256: {describe_error(exc)}")

    def _sha_cancelled(self, _partial: object) -> None:
        self.detail.sha_button.setEnabled(True)
        self.detail.sha.setText("SHA-256: –")

    def _pull_ended(self, added: bool) -> None:
        if added:  # a change of the list, for every page
            self.ctx.bus.models_changed.emit()
        else:
            self.refresh()

    # --- delete ----------------------------------------------------------------------

    def confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text,
                                      QMessageBox.StandardButton.Yes
                                      | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def delete_selected(self) -> None:
        entry = self.selected_entry()
        if entry is None or entry.source not in ("ollama", "gguf"):
            return
        if entry.source == "ollama":
            question = (f"Delete {entry.name} from Ollama at {self.host()}? Its files are "
                        "removed; pulling it again downloads it again.")
        else:
            question = (f"Remove {entry.name} from Corral's list? The file {entry.path} stays "
                        "where it is.")
        if not self.confirm("Delete model", question):
            return
        self.ctx.jobs.run(jobs.delete_job, entry.ref, self._settings(), group="models-delete",
                          on_result=self._deleted)

    def _deleted(self, ref: str) -> None:
        self.ctx.status(f"Deleted {ref}.")
        if ref == self.detail_ref:
            self._clear_detail()
        self.ctx.bus.models_changed.emit()

    # --- import ----------------------------------------------------------------------

    def choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Import GGUF files", str(Path.home()),
                                                "GGUF models (*.gguf);;All files (*)")
        if files:
            self.import_paths(files)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a folder of GGUF files",
                                                  str(Path.home()))
        if folder:
            self.import_paths([folder])

    def import_paths(self, paths: list[str]
                     ) -> Worker[tuple[list[ImportedModel], list[ImportFailure]]]:
        return self.ctx.jobs.run(jobs.import_job, list(paths), group="models-import",
                                 on_progress=self._import_progress, on_result=self._imported)

    def _import_progress(self, fraction: float | None, text: str) -> None:
        self._status(f"Importing: {text}" if fraction is None
                     else f"Importing: {text} ({fraction * 100:.0f}%)")

    def _imported(self, result: tuple[list[ImportedModel], list[ImportFailure]]) -> None:
        imported, failures = result
        lines: list[str] = []
        if imported:
            lines.append("Imported " + ", ".join(m.name for m in imported) + ".")
        lines += [f"Not imported: {Path(f.path).name}: {f.reason}." for f in failures]
        self._status(" ".join(lines) or "Nothing to import.")
        if failures:
            self.ctx.show_error(lines[-1])
        self.ctx.bus.models_changed.emit()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt name)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt name)
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.import_paths(paths)

    def shutdown(self) -> None:
        self.pull.cancel()
