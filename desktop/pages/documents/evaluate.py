"""The Documents page's Evaluate tab: MTEB-style scores of embedders on the selected
knowledge base's documents, as a table and a quality-against-speed chart, with the
recommendation and its reason; CSV and PNG export; the last stored run shown on arrival.

The evaluation runs in the context's job runner (``evaluate_job``); Cancel stops it between
batches and leaves the last stored run on screen.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.context import AppContext
from desktop.jobs import Job, Worker
from desktop.pages.documents.kb_runs import KbRunTab

if TYPE_CHECKING:
    from core.config import Settings
    from core.evaluate.results import EvaluationResult, Score

#: (Score field, column title, digits) shown in the table
TABLE = [("name", "Embedder", 0), ("ndcg_at_10", "nDCG@10", 3), ("recall_at_10", "Recall@10", 3),
         ("mrr_at_10", "MRR@10", 3), ("rerank_map", "Rerank MAP", 3),
         ("v_measure", "V-measure", 3), ("pair_ap", "Pair AP", 3),
         ("sts_spearman", "STS ρ", 3), ("dimensions", "Dims", 0), ("max_tokens", "Max tokens", 0),
         ("index_bytes", "Index", 0), ("chunks_per_s", "Chunks/s", 1), ("query_ms", "Query ms", 1)]
EMBEDDER_COLOUR, BASELINE_COLOUR, PICK_COLOUR = "#1f77b4", "#9e9e9e", "#d62728"


# --- jobs (in the thread pool: no widgets) ---------------------------------------------------


def evaluate_job(job: Job, settings: Settings, name: str, names: list[str]
                 ) -> EvaluationResult:
    from core.evaluate.run import evaluate_kb
    from core.rag.knowledge_base import open_kb

    def progress(fraction: float, text: str) -> None:
        job.check()  # Cancel stops the run here, between batches
        job.progress(fraction, text)

    kb = open_kb(name, settings=settings)
    try:
        return evaluate_kb(kb, names, progress=progress)
    finally:
        kb.close()


def last_run_job(job: Job, settings: Settings, name: str
                 ) -> tuple[str, EvaluationResult | None]:
    from core.evaluate.results import load_last
    from core.rag.knowledge_base import open_kb

    kb = open_kb(name, settings=settings)
    try:
        return name, load_last(kb)
    finally:
        kb.close()


# --- the tab -----------------------------------------------------------------------------------


def _cell(value: object, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n = int(n / 1024)
    return f"{n} bytes"


class _PowerOfTenAxis(pg.AxisItem):  # type: ignore[misc]  # pyqtgraph has no types
    """An axis of log10 values labelled with the values themselves (1, 10, 100 ...)."""

    def tickStrings(self, values: list[float], scale: float, spacing: float  # noqa: N802
                    ) -> list[str]:
        return [f"{10 ** v:,.0f}" if v >= 0 else f"{10 ** v:.2g}" for v in values]


class EvaluateTab(KbRunTab):
    evaluated = Signal(object)  # the EvaluationResult

    kind = "evaluate"
    last_job = staticmethod(last_run_job)
    empty_text = ("No evaluation yet: choose Evaluate to measure which embedder finds this "
                  "knowledge base's sentences best.")

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, parent)
        self.result: EvaluationResult | None = None
        self._build()

    def _build(self) -> None:
        self.embedders = QLineEdit()
        self.embedders.setPlaceholderText("this knowledge base's embedder; or e.g. minilm, "
                                          "minilm:fast, ollama:nomic-embed-text")
        self.embedders.setToolTip("Embedders to compare, separated by commas: minilm, "
                                  "minilm:fast, minilm:fastest, ollama:NAME, a .gguf file or "
                                  "a sentence-transformers folder")
        self.run_button = QPushButton("Evaluate")
        self.run_button.setToolTip("Score the embedders on this knowledge base's documents "
                                   "(known-item sentences, fixed seed)")
        self.run_button.clicked.connect(lambda: self.run_evaluation())
        self.embedders.returnPressed.connect(lambda: self.run_evaluation())
        top = QHBoxLayout()
        top.addWidget(QLabel("Embedders:"))
        top.addWidget(self.embedders, 1)
        top.addWidget(self.run_button)
        top.addWidget(self.cancel_button)
        baselines = QLabel("BM25, a TF-IDF bag of words and random vectors always run as "
                           "baselines.")
        baselines.setStyleSheet("color: palette(mid);")
        self.recommendation = QLabel("")
        self.recommendation.setWordWrap(True)
        self.recommendation.setTextFormat(Qt.TextFormat.PlainText)
        self.recommendation.setStyleSheet("font-weight: bold;")

        self.table = QTableWidget(0, len(TABLE))
        self.table.setHorizontalHeaderLabels([t for _f, t, _d in TABLE])
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.chart = pg.PlotWidget(background="w", axisItems={"bottom": _PowerOfTenAxis("bottom")})
        plot = self.chart.getPlotItem()
        plot.hideButtons()
        plot.setMenuEnabled(False)
        plot.showGrid(x=True, y=True, alpha=0.15)
        plot.setLabel("bottom", "chunks embedded per second (log scale)")
        plot.setLabel("left", "nDCG@10")
        self.chart.setMinimumHeight(180)
        self.results = QSplitter(Qt.Orientation.Vertical)
        self.results.addWidget(self.table)
        self.results.addWidget(self.chart)
        self.results.setSizes([170, 210])

        self.export_csv_button = QPushButton("Export CSV…")
        self.export_png_button = QPushButton("Export PNG…")
        self.export_csv_button.clicked.connect(lambda: self.export_csv())
        self.export_png_button.clicked.connect(lambda: self.export_png())
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("color: palette(mid);")
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.export_csv_button)
        bottom.addWidget(self.export_png_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(top)
        layout.addWidget(baselines)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.recommendation)
        layout.addWidget(self.results, 1)
        layout.addLayout(bottom)
        self._update_buttons()

    # --- running ------------------------------------------------------------------------------

    def run_evaluation(self, names: list[str] | None = None) -> Worker[EvaluationResult] | None:
        if self.kb is None:
            return None
        if names is None:
            names = [n.strip() for n in self.embedders.text().split(",") if n.strip()]
        kept = " The last stored run is still shown." if self.result is not None else ""
        return self.start(evaluate_job, self.ctx.settings, self.kb, names,
                          on_result=self._on_result, cancelled="Evaluation cancelled." + kept)

    def _update_buttons(self) -> None:
        busy = self.busy
        self.run_button.setEnabled(self.kb is not None and not busy)
        self.cancel_button.setEnabled(busy)
        for b in (self.export_csv_button, self.export_png_button):
            b.setEnabled(self.result is not None and not busy)

    def _on_result(self, result: EvaluationResult) -> None:
        self.status.setText(f"Evaluated in {result.elapsed_s:.0f} s.")
        self.show_result(result)
        self.evaluated.emit(result)

    # --- showing a result -----------------------------------------------------------------

    def show_result(self, result: EvaluationResult | None) -> None:
        self.result = result
        scores = result.scores if result is not None else []
        self.table.setRowCount(len(scores))
        for row, s in enumerate(scores):
            for col, (f, _title, digits) in enumerate(TABLE):
                value = getattr(s, f)
                text = _size(value) if f == "index_bytes" and value else _cell(value, digits)
                if f == "name" and s.error:
                    text += " (failed)"
                item = QTableWidgetItem(text)
                if f != "name":
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                item.setToolTip(s.error or text)
                if result is not None and s.name == result.recommendation:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(row, col, item)
        self._plot(scores, result.recommendation if result is not None else "")
        if result is None:
            self.recommendation.setText("")
            self.summary.setText("")
        else:
            pick = (f"Recommended: {result.recommendation}, because {result.reason}."
                    if result.recommendation else result.reason[:1].upper() + result.reason[1:])
            self.recommendation.setText(pick)
            when = datetime.datetime.fromtimestamp(result.created).strftime("%Y-%m-%d %H:%M")
            notes = "".join(f" Note: {n}." for n in result.notes)
            self.summary.setText(
                f"{when}: {result.queries:,} queries ({result.labelled_queries} labelled) on "
                f"{result.chunks:,} chunks of {result.documents:,} documents, seed "
                f"{result.seed}.{notes}")
        self._update_buttons()

    def _plot(self, scores: list[Score], pick: str) -> None:
        self.chart.clear()
        shown = [s for s in scores if not s.error and s.ndcg_at_10 is not None
                 and s.chunks_per_s > 0]
        if not shown:
            return
        xs = [math.log10(s.chunks_per_s) for s in shown]
        ys = [s.ndcg_at_10 or 0.0 for s in shown]
        colours = [PICK_COLOUR if s.name == pick else
                   BASELINE_COLOUR if s.kind == "baseline" else EMBEDDER_COLOUR for s in shown]
        self.chart.addItem(pg.ScatterPlotItem(
            x=xs, y=ys, size=11, pen=pg.mkPen("w"), brush=[pg.mkBrush(c) for c in colours]))
        for s, x, y, c in zip(shown, xs, ys, colours, strict=True):
            label = pg.TextItem(s.name, color=c, anchor=(0, 1))
            label.setPos(x, y)
            self.chart.addItem(label)
        pad = 0.3
        self.chart.setXRange(min(xs) - pad, max(xs) + pad + 0.6)  # room for the labels
        self.chart.setYRange(0.0, max(ys) + 0.12)  # room for the labels above the points

    # --- export ---------------------------------------------------------------------------

    def export_csv(self, path: str | Path | None = None) -> Path | None:
        if self.result is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export the evaluation as CSV",
                                                  f"{self.result.kb}-evaluation.csv",
                                                  "CSV files (*.csv)")
            if not path:
                return None
        target = Path(path)
        try:
            target.write_text(self.result.to_csv(), encoding="utf-8")
        except OSError as exc:
            self.status.setText(f"The CSV could not be written: {exc.strerror or exc}.")
            return None
        self.status.setText(f"Exported {target}.")
        return target

    def export_png(self, path: str | Path | None = None) -> Path | None:
        """The table and the chart, as they are on screen."""
        if self.result is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export the evaluation as PNG",
                                                  f"{self.result.kb}-evaluation.png",
                                                  "PNG images (*.png)")
            if not path:
                return None
        target = Path(path)
        if not self.results.grab().save(str(target), "PNG"):
            self.status.setText(f"The image could not be written to {target}.")
            return None
        self.status.setText(f"Exported {target}.")
        return target
