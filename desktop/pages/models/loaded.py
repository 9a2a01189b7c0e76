"""The Models page's "Loaded in memory" list: every engine child running now (chat models, the
safety guard, tokenizer-only vocabularies), with its context, whether it is busy, its process,
and Unload. Listing and unloading run as jobs (``jobs.loaded_job``, ``jobs.unload_job``); the
list refreshes every few seconds while it is on screen. A model that is generating is never
unloaded: its Unload is off, and the pool refuses one that got busy meanwhile (said plainly)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.context import AppContext
from desktop.pages.models import jobs

if TYPE_CHECKING:
    from core.models.pool import LoadedModel

COLUMNS = ["Model", "Role", "Context", "State", "Process", ""]
ROLES = {"chat": "chat", "guard": "safety guard", "vocab": "tokenizer only"}
REFRESH_MS = 3000
MAX_ROWS = 4
NOTHING = "Nothing is loaded. A model loads when you chat with it (or a page needs its tokenizer)."
BUSY_TIP = "It is generating (or checking) now: stop it or wait, then unload it."


def idle_text(model: LoadedModel) -> str:
    if model.busy:
        return "busy"
    seconds = int(model.idle_s)
    return f"idle {seconds} s" if seconds < 120 else f"idle {seconds // 60} min"


class LoadedPanel(QWidget):
    """What is loaded in memory now, with Unload."""

    refreshed = Signal()  #: the list shows what the pool holds now
    unloaded = Signal(str)  #: a model's engine stopped (its path)

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.models: list[LoadedModel] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        title = QLabel("<b>Loaded in memory</b>")
        self.note = QLabel("")
        self.note.setObjectName("errorText")
        self.note.setWordWrap(True)
        head.addWidget(title)
        head.addWidget(self.note, 1)
        layout.addLayout(head)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.empty = QLabel(NOTHING)
        self.empty.setObjectName("emptyState")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)
        self.stack.setFixedHeight(self.empty.sizeHint().height())
        layout.addWidget(self.stack)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt name)
        super().showEvent(event)
        self.refresh()
        self._timer.start()

    def hideEvent(self, event: QHideEvent) -> None:  # noqa: N802 (Qt name)
        self._timer.stop()
        super().hideEvent(event)

    def refresh(self) -> None:
        # quiet: a look at the pool is not work the user started
        self.ctx.jobs.run(jobs.loaded_job, group="models-loaded", quiet=True,
                          on_result=self._show, on_error=self._failed)

    def _failed(self, exc: BaseException) -> None:
        self.note.setText(self.ctx.show_error(exc))

    def _show(self, models: list[LoadedModel]) -> None:
        self.models = sorted(models, key=lambda m: (m.role, m.path))
        self.table.setRowCount(len(self.models))
        for row, m in enumerate(self.models):
            values = [Path(m.path).name, ROLES.get(m.role, m.role), f"{m.n_ctx:,}",
                      idle_text(m), str(m.pid or "–")]
            for col, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setToolTip(m.path)
                self.table.setItem(row, col, item)
            button = QPushButton("Unload")
            button.setEnabled(not m.busy)
            button.setToolTip(BUSY_TIP if m.busy else f"Stop this engine and free its memory "
                              f"({m.path}).")
            button.clicked.connect(partial(self.unload, m, button))
            self.table.setCellWidget(row, len(COLUMNS) - 1, button)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self._fit_height()
        self.stack.setCurrentWidget(self.table if self.models else self.empty)
        self.refreshed.emit()

    def _fit_height(self) -> None:
        """As tall as its rows, up to MAX_ROWS of them (then it scrolls)."""
        rows = min(self.table.rowCount(), MAX_ROWS)
        height = (self.table.horizontalHeader().height() + 2 * self.table.frameWidth()
                  + sum(self.table.rowHeight(r) for r in range(rows)))
        self.table.setFixedHeight(height)
        self.stack.setFixedHeight(max(height, self.empty.sizeHint().height()))

    def unload_button(self, path: str, role: str = "chat") -> QPushButton | None:
        """The Unload button of the row for ``path`` in ``role``; None without such a row."""
        for row, m in enumerate(self.models):
            if m.path == path and m.role == role:
                widget = self.table.cellWidget(row, len(COLUMNS) - 1)
                return widget if isinstance(widget, QPushButton) else None
        return None

    def unload(self, model: LoadedModel, button: QPushButton) -> None:
        button.setEnabled(False)
        button.setText("Unloading…")
        self.note.clear()
        self.ctx.jobs.run(jobs.unload_job, model, group=f"models-unload:{model.role}:{model.path}",
                          on_result=self._unloaded, on_error=self._unload_failed)

    def _unloaded(self, model: LoadedModel) -> None:
        self.ctx.status(f"Unloaded {Path(model.path).name}; its memory is free.")
        self.unloaded.emit(model.path)
        self.refresh()

    def _unload_failed(self, exc: BaseException) -> None:
        """E.g. EngineBusy: it started generating after the list was shown."""
        self.note.setText(self.ctx.show_error(exc))
        self.refresh()
