"""The Models page's pull bar: an Ollama model name, Pull, its progress and Cancel. The pull
runs as a job (``jobs.pull_job``); Cancel shuts the client's sockets, so a stalled download
stops at once and nothing is added."""

from __future__ import annotations

import re
from functools import partial
from typing import TYPE_CHECKING

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLineEdit, QProgressBar, QPushButton, QWidget

from desktop.context import AppContext
from desktop.pages.models import jobs

if TYPE_CHECKING:
    from core.models.ollama_client import OllamaClient
    from desktop.jobs import Worker


class PullBar(QWidget):
    """Pull an Ollama model, with progress and Cancel."""

    status = Signal(str)  #: a sentence on how the pull goes, for the page to show
    ended = Signal(bool)  #: the pull ended: True when a model was added

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.worker: Worker[str] | None = None
        self.client: OllamaClient | None = None
        self.name = QLineEdit()
        self.name.setPlaceholderText("Ollama model to pull, e.g. llama2:7b or llama-guard3:1b")
        self.button = QPushButton("Pull")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for w in (self.name, self.button, self.progress, self.cancel_button):
            row.addWidget(w, 1 if w in (self.name, self.progress) else 0)
        self.button.clicked.connect(self.start)
        self.name.returnPressed.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)

    @property
    def running(self) -> bool:
        return self.worker is not None and not self.worker.is_done

    def start(self) -> None:
        name = self.name.text().strip().removeprefix("ollama:")
        if not name:
            self.status.emit("Type the name of an Ollama model to pull, e.g. llama2:7b.")
            return
        if not re.fullmatch(r"[A-Za-z0-9_./:-]+", name):
            self.status.emit(f"'{name}' is not a valid Ollama model name.")
            return
        if self.running:
            return
        from core.models.ollama_client import OllamaClient

        self.client = client = OllamaClient.from_settings(self.ctx.settings)
        self.button.setEnabled(False)
        self.name.setEnabled(False)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self.cancel_button.setEnabled(True)
        self.status.emit(f"Pulling {name}…")
        self.worker = self.ctx.jobs.run(
            jobs.pull_job, client, name, group="models-pull",
            on_progress=self._progress, on_result=self._done,
            on_error=self._failed, on_cancelled=partial(self._cancelled, name),
            interrupt=client.cancel)

    def cancel(self) -> None:
        if self.worker is not None and self.running:
            self.cancel_button.setEnabled(False)
            self.status.emit("Cancelling…")
            self.worker.cancel()

    def _progress(self, fraction: float | None, text: str) -> None:
        if fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(fraction * 1000))
        self.status.emit(text)

    def _finish(self, sentence: str, added: bool) -> None:
        self.button.setEnabled(True)
        self.name.setEnabled(True)
        self.progress.hide()
        self.cancel_button.hide()
        self.status.emit(sentence)
        self.ended.emit(added)

    def _done(self, name: str) -> None:
        self.ctx.status(f"Pulled {name}.")
        self._finish(f"Pulled {name}.", True)

    def _failed(self, exc: BaseException) -> None:
        self._finish(self.ctx.show_error(exc), False)

    def _cancelled(self, name: str, _partial: object) -> None:
        self._finish(f"Pull of {name} cancelled; nothing was added.", False)
