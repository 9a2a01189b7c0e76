"""The Workshop page's Measure tab: one table of every variant (size, bits per weight, load
time, speed, perplexity, KL divergence, top-1 agreement) and a plot of size against
perplexity."""

from __future__ import annotations

import math
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from core.config import Settings
from desktop.context import AppContext
from desktop.jobs import Job, Worker
from desktop.pages.workshop.common import (
    JobTab,
    ModelPicker,
    job_progress,
    primary_button,
    text_file_field,
)

GROUP = "workshop-measure"
KBS_GROUP = "workshop-kbs"
COLUMNS = ("Model", "Type", "MiB", "Bits/weight", "Load s", "Prompt tok/s", "Gen tok/s",
           "Perplexity", "KL vs ref", "Top-1 agree", "Ternary")
INTRO = ("Add the variants to compare; the first is the reference. Perplexity is measured on "
         "your text (lower is better); KL divergence and top-1 agreement compare each model's "
         "next-token distribution with the reference's, as llama.cpp's KL-divergence mode does.")


def _measure_job(job: Job, refs: list[str], text_file: str, kb: str, n_ctx: int,
                 max_tokens: int, settings: Settings) -> object:
    from core.workshop.measure import evaluate_models, text_from_file, text_from_kb

    if kb:
        text, source = text_from_kb(kb, settings), f"knowledge base {kb}"
    else:
        text, source = text_from_file(Path(text_file)), text_file
    job.check()
    return evaluate_models(refs, text, text_source=source, n_ctx=n_ctx, max_tokens=max_tokens,
                           gen_tokens=16, progress=job_progress(job), settings=settings)


def _kbs_job(job: Job, settings: Settings) -> list[str]:
    from core.analysis.corpus import knowledge_base_names

    return list(knowledge_base_names(settings))


def _perplexity(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.3f}" if value < 1e4 else f"{value:.3g}"


class MeasureTab(JobTab):
    GROUP = GROUP
    STOPPED = "Stopped. The table still shows the last finished measurement."
    measured = Signal()

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, INTRO, parent)
        self.evaluation: object = None
        col = self.col
        row = QHBoxLayout()
        self.picker = ModelPicker()
        add = QPushButton("Add")
        add.clicked.connect(self.add_current)
        remove = QPushButton("Remove")
        remove.clicked.connect(self._remove_selected)
        row.addWidget(QLabel("Model"))
        row.addWidget(self.picker, 1)
        row.addWidget(add)
        row.addWidget(remove)
        col.addLayout(row)
        self.models = QListWidget()
        self.models.setMaximumHeight(72)
        col.addWidget(self.models)
        row = QHBoxLayout()
        self.use_file = QRadioButton("Text file")
        self.use_file.setChecked(True)
        self.text_path, browse = text_file_field(self, "a plain-text file in the models' language")
        self.use_kb = QRadioButton("Knowledge base")
        self.kb_box = QComboBox()
        self.kb_box.setMinimumWidth(160)
        self.use_kb.toggled.connect(self._kb_toggled)
        row.addWidget(self.use_file)
        row.addWidget(self.text_path, 1)
        for w in (browse, self.use_kb, self.kb_box):
            row.addWidget(w)
        col.addLayout(row)
        row = QHBoxLayout()
        self.ctx_box = QSpinBox()
        self.ctx_box.setRange(32, 512)
        self.ctx_box.setValue(512)
        self.tokens_box = QSpinBox()
        self.tokens_box.setRange(64, 65536)
        self.tokens_box.setValue(2048)
        self.run_button = primary_button("Measure", self.start)
        for label, box in (("Chunk", self.ctx_box), ("Tokens", self.tokens_box)):
            row.addWidget(QLabel(label))
            row.addWidget(box)
        row.addWidget(self.run_button)
        row.addWidget(self.progress, 1)
        col.addLayout(row)
        split = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        split.addWidget(self.table)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setLabel("bottom", "size (MiB)")
        self.plot.setLabel("left", "perplexity (log scale)")
        self.plot.setLogMode(y=True)
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        split.addWidget(self.plot)
        split.setSizes([190, 330])  # room for a table of four variants
        col.addWidget(split, 1)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        col.addWidget(self.note)
        self.kb_box.setEnabled(False)
        ctx.bus.models_changed.connect(self.picker.refresh)

    def refs(self) -> list[str]:
        return [self.models.item(i).text() for i in range(self.models.count())]

    def add_model(self, ref: str) -> None:
        if ref and ref not in self.refs():
            self.models.addItem(ref)

    def add_current(self) -> None:
        self.add_model(self.picker.text())

    def _remove_selected(self) -> None:
        for item in self.models.selectedItems():
            self.models.takeItem(self.models.row(item))

    def _kb_toggled(self, on: bool) -> None:
        self.kb_box.setEnabled(on)
        if on and self.kb_box.count() == 0:
            self.ctx.jobs.run(_kbs_job, self.ctx.settings, group=KBS_GROUP,
                              on_result=self._kbs_listed)

    def _kbs_listed(self, names: list[str]) -> None:
        self.kb_box.clear()
        self.kb_box.addItems(names)

    def start(self) -> Worker[object] | None:
        refs = self.refs()
        if not refs:
            self.progress.finished("Add at least one model; the first is the reference.")
            return None
        kb = self.kb_box.currentText() if self.use_kb.isChecked() else ""
        text_file = self.text_path.text().strip()
        if not kb and not text_file:
            self.progress.finished("Choose a text file or a knowledge base to measure on.")
            return None
        return self.run_job(
            "Measuring…", _measure_job, refs, text_file, kb, self.ctx_box.value(),
            self.tokens_box.value(), self.ctx.settings, on_result=self.show_evaluation)

    def show_evaluation(self, evaluation: object) -> None:
        from core.workshop.measure import Evaluation

        assert isinstance(evaluation, Evaluation)
        self.evaluation = evaluation
        self.ended(f"Measured {len(evaluation.variants)} models on "
                               f"{evaluation.tokens} tokens of {evaluation.text_source}.")
        self.table.setRowCount(len(evaluation.variants))
        for r, v in enumerate(evaluation.variants):
            cells = (v.name + (" (reference)" if v.is_reference else ""), v.file_type,
                     f"{v.size / 2**20:.1f}", f"{v.bits_per_weight:.2f}", f"{v.load_s:.2f}",
                     f"{v.prompt_tps:.0f}", f"{v.gen_tps:.0f}", _perplexity(v.perplexity),
                     "-" if v.kl_divergence is None else f"{v.kl_divergence:.4f}",
                     "-" if v.top1_agreement is None else f"{v.top1_agreement:.1%}",
                     "-" if v.ternary_share is None else f"{v.ternary_share:.1%} ternary")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self._plot(evaluation)
        self.note.setText(f"Perplexity over {evaluation.variants[0].tokens_scored} scored tokens "
                          f"(the second half of each {evaluation.chunk}-token chunk). KL is in "
                          "nats per token against the first model.")
        self.measured.emit()

    def _plot(self, evaluation: object) -> None:
        from core.workshop.measure import Evaluation

        assert isinstance(evaluation, Evaluation)
        self.plot.clear()
        points = [(v.size / 2**20, v.perplexity, v.name) for v in evaluation.variants
                  if math.isfinite(v.perplexity) and v.perplexity > 0]
        if not points:
            return
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        self.plot.plot(xs, ys, pen=None, symbol="o", symbolSize=10, symbolBrush="#1f77b4")
        right = max(xs)
        for x, y, name in points:
            # Labels of the right-most points hang to the left, so they are not cut off.
            label = pg.TextItem(name, color="#333", anchor=(1 if x > 0.7 * right else 0, 1))
            label.setPos(x, math.log10(y))
            self.plot.addItem(label)
