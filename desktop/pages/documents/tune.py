"""The Documents page's Tune tab: search chunk size, overlap, embedder and keyword weight for
the selected knowledge base within a time budget (``core.evaluate.tune_kb``: successive
halving on known-item questions from its own documents), show the best configuration against
the current one, and apply it. A new chunking or embedder re-indexes into a new generation that
is swapped in only when it is complete, so Cancel (or a failure) leaves the knowledge base as it
was. The last stored run is shown on arrival.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.context import AppContext
from desktop.jobs import Job
from desktop.pages.documents.kb_runs import KbRunTab

if TYPE_CHECKING:
    from core.config import Settings
    from core.evaluate.tune import Trial, TuneResult

DEFAULT_BUDGET_S = 120


# --- jobs (in the thread pool: no widgets) ---------------------------------------------------


def tune_job(job: Job, settings: Settings, name: str, names: list[str], budget_s: float
             ) -> TuneResult:
    from core.evaluate.tune_kb import tune_kb
    from core.rag.knowledge_base import open_kb

    def progress(fraction: float, text: str) -> None:
        job.check()  # Cancel stops the search here, between trials
        job.progress(fraction, text)

    kb = open_kb(name, settings=settings)
    try:
        return tune_kb(kb, names, budget_s=budget_s, progress=progress)
    finally:
        kb.close()


def apply_job(job: Job, settings: Settings, name: str, result: TuneResult) -> str:
    from core.evaluate.tune_kb import apply_best, remember_applied
    from core.rag.knowledge_base import open_kb

    def progress(fraction: float | None, text: str) -> None:
        job.check()
        job.progress(fraction, text)

    kb = open_kb(name, settings=settings)
    try:
        said = apply_best(kb, result, progress=progress)
    finally:
        kb.close()
    remember_applied(name, settings, result, said)
    return said


def last_tune_job(job: Job, settings: Settings, name: str) -> tuple[str, TuneResult | None]:
    from core.evaluate.tune_kb import load_tune
    from core.rag.knowledge_base import open_kb

    kb = open_kb(name, settings=settings)
    try:
        return name, load_tune(kb)
    finally:
        kb.close()


# --- the tab -----------------------------------------------------------------------------------


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class TuneTab(KbRunTab):
    tuned = Signal(object)  # the TuneResult
    applied = Signal(str)  # what changed

    kind = "tune"
    last_job = staticmethod(last_tune_job)
    empty_text = ("Not tuned yet: choose Tune to find the chunk size, overlap, embedder and "
                  "keyword weight that answer this knowledge base's own questions best.")

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, parent)
        self.result: TuneResult | None = None
        self._build()

    def _build(self) -> None:
        self.embedders = QLineEdit()
        self.embedders.setPlaceholderText("only this knowledge base's embedder; or also e.g. "
                                          "minilm:fast, ollama:nomic-embed-text")
        self.budget = QSpinBox()
        self.budget.setRange(10, 3600)
        self.budget.setValue(DEFAULT_BUDGET_S)
        self.budget.setSuffix(" s")
        self.budget.setToolTip("How long the search may take; it stops with the best so far")
        self.run_button = QPushButton("Tune")
        self.run_button.setToolTip("Try chunk sizes, overlaps, embedders and keyword weights on "
                                   "questions from this knowledge base's own documents")
        self.apply_button = QPushButton("Apply best")
        self.run_button.clicked.connect(lambda: self.run_tune())
        self.apply_button.clicked.connect(lambda: self.apply_best())
        top = QHBoxLayout()
        top.addWidget(QLabel("Also try:"))
        top.addWidget(self.embedders, 1)
        top.addWidget(QLabel("Budget:"))
        top.addWidget(self.budget)
        top.addWidget(self.run_button)
        top.addWidget(self.cancel_button)
        self.table = QTableWidget(2, 4)
        self.table.setHorizontalHeaderLabels(["", "Configuration", "nDCG@10", "Recall@10"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        row = self.fontMetrics().height() + 10
        self.table.verticalHeader().setDefaultSectionSize(row)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setFixedHeight(self.table.horizontalHeader().sizeHint().height() + 2 * row
                                  + 2 * self.table.frameWidth())
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("color: palette(mid);")
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.apply_button, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.table)
        layout.addLayout(bottom)
        layout.addStretch(1)
        self._update_buttons()

    # --- running ------------------------------------------------------------------------------

    def run_tune(self) -> None:
        if self.kb is None or self.busy:
            return
        names = [n.strip() for n in self.embedders.text().split(",") if n.strip()]
        self.start(tune_job, self.ctx.settings, self.kb, names, float(self.budget.value()),
                   on_result=self._on_tuned, cancelled="Tuning cancelled.")

    def apply_best(self, *, confirm: bool = True) -> None:
        result = self.result
        if self.kb is None or result is None or self.busy or not self._better(result):
            return
        best = result.best.config
        if confirm and QMessageBox.question(
                self, "Apply the best configuration",
                f"Make “{best.label()}” the configuration of “{self.kb}”?\n\nA new chunking or "
                "embedder re-indexes its documents; the knowledge base keeps serving as it is "
                "until the new index is complete.") != QMessageBox.StandardButton.Yes:
            return
        self.start(apply_job, self.ctx.settings, self.kb, result, on_result=self._on_applied,
                   cancelled="Applying cancelled: the index was not replaced; the knowledge "
                             "base keeps its chunking and embedder.")

    def _update_buttons(self) -> None:
        busy = self.busy
        self.run_button.setEnabled(self.kb is not None and not busy)
        self.cancel_button.setEnabled(busy)
        self.apply_button.setEnabled(self.result is not None and not busy
                                     and self._better(self.result))

    @staticmethod
    def _better(result: TuneResult) -> bool:
        """The best configuration is another than the current one, and not applied yet."""
        return result.best.config != result.current.config and not result.applied

    def _on_tuned(self, result: TuneResult) -> None:
        self.status.setText(f"Tuned in {result.elapsed_s:.0f} s.")
        self.show_result(result)
        self.tuned.emit(result)

    def _on_applied(self, said: str) -> None:
        self.status.setText(f"Applied: {said}.")
        self.ctx.bus.knowledge_bases_changed.emit()  # its chunking or weight changed
        self.load_last()  # the run, now marked applied
        self.applied.emit(said)

    # --- showing a result -----------------------------------------------------------------

    def show_result(self, result: TuneResult | None) -> None:
        self.result = result
        rows: list[tuple[str, Trial | None]] = [("Current", result.current if result else None),
                                                ("Best", result.best if result else None)]
        for row, (label, trial) in enumerate(rows):
            cells = [label, trial.config.label() if trial else "–",
                     f"{trial.ndcg_at_10:.3f}" if trial else "–",
                     f"{trial.recall_at_10:.3f}" if trial else "–"]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col >= 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        if result is None:
            self.summary.setText("")
        else:
            when = datetime.datetime.fromtimestamp(result.created).strftime("%Y-%m-%d %H:%M")
            verdict = (f"Applied: {result.applied}." if result.applied else
                       f"The best configuration gains {result.gain:+.3f} nDCG@10."
                       if self._better(result) else "The current configuration is the best.")
            budget = " (the budget ran out)" if result.stopped_by_budget else ""
            apply = (" Apply sets the best configuration and this number for the knowledge "
                     "base." if self._better(result) else "")
            notes = "".join(f" Note: {n}." for n in result.notes)
            self.summary.setText(
                f"{verdict} {when}: {_count(len(result.trials), 'trial')} in "
                f"{_count(result.rungs, 'rung')}, "
                f"{result.elapsed_s:.0f} s{budget}, on {result.best.queries:,} questions from "
                f"{result.best.documents:,} documents, seed {result.seed}. Passages to give "
                f"chat: {result.top_k} (recall@{result.top_k} {result.recall_at_k:.3f}, "
                f"recall@20 {result.recall_at_20:.3f}).{apply}{notes}")
        self._update_buttons()
