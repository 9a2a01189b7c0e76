"""Settings page: hosts, stores, engine and embedder defaults, saved atomically to settings.toml."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.config import Settings, settings_path
from core.errors import CorralError
from core.models.pool import use_settings
from desktop.context import AppContext
from desktop.jobs import Job, Worker
from desktop.layout import page_title, scrolling_column
from desktop.pages.settings.calibration import KEEP, CalibrationChoice, calibration_texts
from desktop.serve import serve_fields
from desktop.widgets.embedder import embedder_mode_box, embedder_spec_edit


class SettingsPage(QWidget):
    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        s = ctx.settings
        outer = QVBoxLayout(self)
        page_title(outer, "Settings")
        col = scrolling_column(outer)

        self.ollama_host = QLineEdit(s.ollama.host)
        self.ollama_host.setPlaceholderText("empty: $OLLAMA_HOST, else 127.0.0.1:11434")
        self.store_dir = QLineEdit(s.ollama.store_dir)
        self.store_dir.setPlaceholderText("empty: $OLLAMA_MODELS, ~/.ollama/models, /usr/share/ollama/…")
        col.addWidget(_group("Ollama", [("Host", self.ollama_host), ("Model store folder", self.store_dir)]))

        self.threads = QSpinBox()
        self.threads.setRange(0, 256)
        self.threads.setSpecialValueText("automatic")
        self.threads.setValue(s.engine.n_threads)
        self.n_ctx = QSpinBox()
        self.n_ctx.setRange(256, 1_048_576)
        self.n_ctx.setSingleStep(1024)
        self.n_ctx.setValue(s.engine.n_ctx)
        self.max_models = QSpinBox()
        self.max_models.setRange(1, 16)
        self.max_models.setValue(max(1, s.engine.max_models))
        self.max_models.setToolTip("Chat models kept loaded at once; the guard has its own slot. "
                                   "Opening one more unloads the least recently used idle one.")
        self.keep_alive = QSpinBox()
        self.keep_alive.setRange(0, 7 * 24 * 3600)
        self.keep_alive.setSingleStep(60)
        self.keep_alive.setSuffix(" s")
        self.keep_alive.setSpecialValueText("never (only to make room)")
        self.keep_alive.setValue(max(0, int(s.engine.keep_alive_s)))
        self.keep_alive.setToolTip("An idle model is unloaded after this long.")
        col.addWidget(_group("llama.cpp engine", [
            ("CPU threads", self.threads), ("Context length", self.n_ctx),
            ("Models loaded at once", self.max_models), ("Unload idle models after", self.keep_alive),
        ]))

        self.store_mode = QComboBox()
        self.store_mode.addItem("Embedded (this computer, one Corral at a time)", "embedded")
        self.store_mode.addItem("Chroma server (shared)", "server")
        self.store_mode.setCurrentIndex(max(0, self.store_mode.findData(s.store.mode)))
        self.store_host = QLineEdit(s.store.host)
        self.store_port = QSpinBox()
        self.store_port.setRange(1, 65535)
        self.store_port.setValue(s.store.port)
        col.addWidget(_group("Document store (Chroma)", [
            ("Mode", self.store_mode), ("Server host", self.store_host), ("Server port", self.store_port),
        ]))

        self.embedder = embedder_spec_edit(s.embedder.default)
        self.embedder_mode = embedder_mode_box(s.embedder.mode)
        self.export_bar = QProgressBar()
        self.export_bar.setFormat("Preparing the embedder for this CPU… %p%")
        self.export_bar.hide()
        self.export_note = QLabel("")
        self.export_note.setObjectName("emptyState")
        self.export_note.setWordWrap(True)
        self.calibration = CalibrationChoice(ctx)
        self.calibration.calibrate_button.clicked.connect(lambda: self.prepare_embedder("fastest"))
        col.addWidget(_group("Embedder", [
            ("Model", self.embedder), ("Speed mode", self.embedder_mode),
            ("Calibrate “fastest” on", self.calibration),
            ("", self.export_bar), ("", self.export_note),
        ]))
        self._export: Worker[bool] | None = None

        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(s.chat.temperature)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 131072)
        self.max_tokens.setValue(s.chat.max_tokens)
        col.addWidget(_group("Chat defaults", [("Temperature", self.temperature), ("Max tokens", self.max_tokens)]))
        serve_box, self._write_serve = serve_fields(ctx)  # issue 18: the local API switch
        col.addWidget(serve_box)
        col.addStretch(1)

        self.problem = QLabel("")  # why the settings are not saved, while that holds
        self.problem.setObjectName("errorText")
        self.problem.setWordWrap(True)
        self.problem.hide()
        outer.addWidget(self.problem)
        if ctx.settings_error:
            self._show_problem(f"{ctx.settings_error} Corral runs on the defaults and does not "
                               "overwrite that file: fix or remove it, then restart Corral.")
        row = QHBoxLayout()
        self.where = QLabel(f"Saved to {settings_path()}")
        self.where.setObjectName("emptyState")
        self.save_button = QPushButton("Save")
        self.save_button.setObjectName("primary")
        self.save_button.clicked.connect(self.save)
        row.addWidget(self.where, 1)
        row.addWidget(self.save_button)
        outer.addLayout(row)

    def _show_problem(self, text: str) -> None:
        self.problem.setText(text)
        self.problem.setVisible(bool(text))

    def save(self) -> None:
        s = self.ctx.settings
        s.ollama.host = self.ollama_host.text().strip()
        s.ollama.store_dir = self.store_dir.text().strip()
        s.engine.n_threads = self.threads.value()
        s.engine.n_ctx = self.n_ctx.value()
        s.engine.max_models = self.max_models.value()
        s.engine.keep_alive_s = float(self.keep_alive.value())
        s.store.mode = str(self.store_mode.currentData())
        s.store.host = self.store_host.text().strip() or "127.0.0.1"
        s.store.port = self.store_port.value()
        s.embedder.default = self.embedder.text().strip() or "minilm"
        s.embedder.mode = str(self.embedder_mode.currentData())
        s.chat.temperature = self.temperature.value()
        s.chat.max_tokens = self.max_tokens.value()
        self._write_serve()
        problem = self.ctx.save_settings()
        if problem is not None:
            self._show_problem(problem)  # beside the button, as well as in the status bar
            return
        self._show_problem("")
        use_settings(s)  # instant: the pool unloads any surplus in its own thread
        self.ctx.status("Settings saved.")
        if s.embedder.mode != "standard":
            self.prepare_embedder()

    def prepare_embedder(self, mode: str = "") -> Worker[bool]:
        """Export the fast/fastest embedder once (30-60 s), with progress, in a worker;
        'fastest' calibrated on the chosen source.

        Saving again while it runs starts over with the new choice (the older export's news
        is dropped)."""
        s = self.ctx.settings.embedder
        self.export_bar.setValue(0)
        self.export_note.setText("")
        self._export = self.ctx.jobs.run(
            _prepare_embedder, self.ctx.settings, mode or s.mode, s.default,
            self.calibration.source(), group="settings-embedder-export",
            on_progress=self._export_progress, on_result=self._export_finished,
            on_error=self._export_failed, on_cancelled=self._export_cancelled)
        return self._export

    def _export_progress(self, fraction: float | None, text: str) -> None:
        self.export_bar.show()
        if fraction is not None:
            self.export_bar.setValue(int(fraction * 100))
        self.export_note.setText(text)

    def _export_finished(self, ready_before: bool) -> None:
        self.export_bar.hide()
        mode = self.ctx.settings.embedder.mode
        self.export_note.setText(f"The {mode} embedder is ready." if not ready_before else "")

    def _export_failed(self, exc: BaseException) -> None:
        self.export_bar.hide()
        self.export_note.setText(self.ctx.show_error(exc)
                                 + " Indexing uses the standard embedder until this works.")

    def _export_cancelled(self, _partial: object) -> None:
        self.export_bar.hide()
        self.export_note.setText(f"Preparing the {self.ctx.settings.embedder.mode} embedder "
                                 "was cancelled; it starts again the next time it is needed.")

    def shutdown(self) -> None:
        if self._export is not None:
            self._export.cancel()


def _prepare_embedder(job: Job, settings: Settings, mode: str, spec: str,
                      source: tuple[Any, ...] = KEEP) -> bool:
    """True when the export already existed (nothing to do)."""
    from core.rag.fast_embedder import fast_embedder_ready, prepare_fast_embedder

    calibrate = mode == "fastest" and source != KEEP
    if not calibrate and fast_embedder_ready(mode, spec):
        return True
    texts = calibration_texts(job, settings, source) if calibrate else None
    if calibrate and source[0] != "builtin" and not texts:
        raise CorralError("there is no text to calibrate on there",
                          hint="Pick a knowledge base with documents, or other files.")

    def progress(fraction: float | None, text: str = "") -> None:
        job.check()  # raising Cancelled here stops the export child cleanly
        job.progress(fraction, text)

    prepare_fast_embedder(mode, spec, calibration=texts, progress=progress)
    return False


def _group(title: str, rows: list[tuple[str, QWidget]]) -> QGroupBox:
    box = QGroupBox(title)
    form = QFormLayout(box)
    for label, widget in rows:
        form.addRow(label, widget)
    return box
