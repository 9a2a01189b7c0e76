"""What the Workshop tabs share: a model picker, a progress row with Stop, file rows, and
JobTab, a tab whose primary button starts one cancellable job at a time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from desktop.context import AppContext
from desktop.jobs import Job, Worker


def job_progress(job: Job) -> Callable[[float, str], None]:
    """A core progress callback that reports to the worker and raises Cancelled on Stop."""

    def report(fraction: float, text: str) -> None:
        job.check()
        job.progress(fraction, text)

    return report


class ModelPicker(QWidget):
    """An editable list of the library's models (names) plus a Browse button for files."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setMinimumWidth(320)
        edit = self.combo.lineEdit()
        if edit is not None:
            edit.setPlaceholderText("an imported model, store:NAME or a .gguf path")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.browse)
        row.addWidget(self.combo, 1)
        row.addWidget(browse)
        self.refresh()

    def refresh(self) -> None:
        from core.errors import CorralError
        from core.models import library

        current = self.text()
        try:
            names = [m.name for m in library.load()]
        except CorralError:
            names = []
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(names)
        self.combo.setCurrentText(current)
        self.combo.blockSignals(False)

    def browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF model", str(Path.home()),
                                              "GGUF models (*.gguf)")
        if path:
            self.set_text(path)

    def text(self) -> str:
        return self.combo.currentText().strip()

    def set_text(self, text: str) -> None:
        self.combo.setCurrentText(text)


class ProgressRow(QWidget):
    """A progress bar, what is happening, and a Stop button (enabled while a job runs)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setMaximumWidth(260)
        self.label = QLabel("")
        self.stop = QPushButton("Stop")
        self.stop.setEnabled(False)
        self.bar.setVisible(False)  # shown while a job runs
        row.addWidget(self.bar)
        row.addWidget(self.label, 1)
        row.addWidget(self.stop)

    def started(self, text: str) -> None:
        self.bar.setValue(0)
        self.bar.setVisible(True)
        self.label.setText(text)
        self.stop.setEnabled(True)

    def report(self, fraction: float | None, text: str) -> None:
        if fraction is not None and fraction >= 0:
            self.bar.setValue(int(fraction * 1000))
        if text:
            self.label.setText(text)

    def finished(self, text: str) -> None:
        self.stop.setEnabled(False)
        self.bar.setVisible(False)
        self.label.setText(text)


def primary_button(text: str, slot: Callable[[], object]) -> QPushButton:
    """The tab's main action button (styled as primary)."""
    button = QPushButton(text)
    button.setObjectName("primary")
    button.clicked.connect(slot)
    return button


def save_as_row(owner: QWidget, title: str, *lead: QWidget) -> tuple[QHBoxLayout, QLineEdit]:
    """``lead`` widgets, a path field (empty: Corral's models folder) and Browse… for where a
    new GGUF goes; the row and its path field."""
    row = QHBoxLayout()
    edit = QLineEdit()
    edit.setPlaceholderText("Corral's models folder (default)")

    def choose() -> None:
        path, _ = QFileDialog.getSaveFileName(owner, title, str(Path.home()),
                                              "GGUF models (*.gguf)")
        if path:
            edit.setText(path)

    browse = QPushButton("Browse…")
    browse.clicked.connect(choose)
    for widget in lead:
        row.addWidget(widget)
    row.addWidget(edit, 1)
    row.addWidget(browse)
    return row, edit


def text_file_field(owner: QWidget, placeholder: str) -> tuple[QLineEdit, QPushButton]:
    """A path field for a text to measure on, and its Browse… button."""
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)

    def choose() -> None:
        path, _ = QFileDialog.getOpenFileName(owner, "Text to measure on", str(Path.home()),
                                              "Text (*.txt *.md);;All files (*)")
        if path:
            edit.setText(path)

    browse = QPushButton("Browse…")
    browse.clicked.connect(choose)
    return edit, browse


class JobTab(QWidget):
    """A Workshop tab: an intro, then its own widgets; ``run_button`` (set by the subclass) is
    off while its job runs in ``GROUP``, and ``progress`` shows how it goes, with Stop."""

    GROUP = ""
    #: what the progress row says when Stop ended the job
    STOPPED = "Stopped."

    def __init__(self, ctx: AppContext, intro: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.col = QVBoxLayout(self)
        label = QLabel(intro)
        label.setWordWrap(True)
        self.col.addWidget(label)
        self.run_button: QPushButton
        self.worker: Worker[Any] | None = None  # the latest job
        self.progress = ProgressRow()
        self.progress.stop.clicked.connect(self.stop)

    def add_run_row(self, label: str, start: Callable[[], object],
                    placeholder: str) -> None:
        """[label] and the progress row, then a result browser below (``self.result``)."""
        buttons = QHBoxLayout()
        self.run_button = primary_button(label, start)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.progress, 1)
        self.col.addLayout(buttons)
        self.result = QTextBrowser()
        self.result.setPlaceholderText(placeholder)
        self.col.addWidget(self.result, 1)

    def run_job(self, text: str, fn: Callable[..., Any], *args: Any,
                on_result: Callable[[Any], object]) -> Worker[Any]:
        """Turn the run button off, say ``text``, and run ``fn(job, *args)`` in ``GROUP``."""
        self.run_button.setEnabled(False)
        self.progress.started(text)
        self.worker = self.ctx.jobs.run(
            fn, *args, group=self.GROUP, on_progress=self.progress.report, on_result=on_result,
            on_error=self._failed, on_cancelled=self._stopped)
        return self.worker

    def stop(self) -> None:
        self.ctx.jobs.cancel(self.GROUP)

    def ended(self, text: str) -> None:
        """The job is over: the run button is live again and the row says ``text``."""
        self.run_button.setEnabled(True)
        self.progress.finished(text)

    def _stopped(self, _partial: object) -> None:
        self.ended(self.STOPPED)

    def _failed(self, exc: BaseException) -> str:
        sentence = self.ctx.show_error(exc)
        self.ended(sentence)
        return sentence
