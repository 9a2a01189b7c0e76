"""What the 'fastest' (int8) embedder is calibrated on: a knowledge base's documents, files
the user picks, or the built-in passages. Each calibration is its own cached model, so
knowledge bases made with an earlier one keep working unchanged."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QPushButton, QWidget

from core.config import Settings
from desktop.context import AppContext
from desktop.jobs import Job

KEEP = ("keep",)
BUILT_IN = ("builtin",)


class CalibrationChoice(QWidget):
    """A combo of sources (filled off the GUI thread) and a 'Calibrate now' button."""

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setToolTip("The 'fastest' mode is int8, calibrated on passages like the ones "
                              "it will embed. Knowledge bases keep the calibration they were "
                              "made with; new ones get the last one prepared.")
        self.calibrate_button = QPushButton("Calibrate now")
        row.addWidget(self.combo, 1)
        row.addWidget(self.calibrate_button)
        self._files: list[str] = []
        self._listed = False
        self._fill([])
        self.combo.activated.connect(self._picked)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if not self._listed:  # the knowledge bases are listed once the row is seen
            self._listed = True
            self.ctx.jobs.run(_kb_names, self.ctx.settings, group="settings-calibration-kbs",
                              on_result=self._fill,
                              on_error=lambda exc: self.ctx.status(
                                  f"Knowledge bases could not be listed: {exc}"))

    def _fill(self, names: list[str]) -> None:
        self.combo.clear()
        self.combo.addItem("Keep the current calibration", KEEP)
        self.combo.addItem("The built-in passages", BUILT_IN)
        for name in names:
            self.combo.addItem(f"The documents of “{name}”", ("kb", name))
        self.combo.addItem("Files I pick…", ("files",))

    def _picked(self, _index: int) -> None:
        if self.combo.currentData() == ("files",):
            paths, _filter = QFileDialog.getOpenFileNames(self, "Calibrate on these files")
            self._files = list(paths)
            if not paths:
                self.combo.setCurrentIndex(0)

    def source(self) -> tuple[Any, ...]:
        data = tuple(self.combo.currentData() or KEEP)
        return ("files", tuple(self._files)) if data == ("files",) else data


def _kb_names(job: Job, settings: Settings) -> list[str]:
    from core.analysis.corpus import knowledge_base_names

    job.progress(None, "Listing knowledge bases…")
    return knowledge_base_names(settings)


def calibration_texts(job: Job, settings: Settings, source: tuple[Any, ...]) -> list[str] | None:
    """The passages for ``source`` (None: the built-in ones)."""
    from core.rag.fast_embedder import calibration_sample
    from core.rag.knowledge_base import open_kb

    if source[0] == "kb":
        job.progress(None, f"Reading passages of “{source[1]}”…")
        kb = open_kb(str(source[1]), settings=settings)
        try:
            return kb.calibration_passages()
        finally:
            kb.close()
    if source[0] == "files":
        job.progress(None, "Reading passages of the files…")
        return calibration_sample(list(source[1])) or None
    return None
