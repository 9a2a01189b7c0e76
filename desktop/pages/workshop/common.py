"""Widgets the Workshop tabs share: a model picker and a progress row with Stop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QWidget,
)

from desktop.jobs import Job


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
