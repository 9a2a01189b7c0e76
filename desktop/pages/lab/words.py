"""Lab tabs on word vectors: train word2vec or GloVe and explore them (nearest words,
analogies, a map), and the dimension experiment (quality score and time per size)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QWidget,
)

from core.config import Settings
from core.errors import CorralError
from desktop.jobs import Job, Worker
from desktop.pages.lab.jobs import load_text, reporter
from desktop.pages.lab.widgets import (
    LabTab,
    LinePlot,
    WordMap,
    fill_table,
    labelled_row,
    spin_box,
)

if TYPE_CHECKING:
    from core.lab.evaluate import DimensionRow
    from core.lab.vectors import TrainedVectors
    from desktop.pages.lab.page import LabPage

TRAIN_GROUP = "lab-train"
DIMS_GROUP = "lab-dims"
METHODS = [("CBOW (word2vec)", "cbow"), ("Skip-gram (word2vec)", "skipgram"), ("GloVe", "glove")]
EMPTY = ("Pick a text and a method, then Train. CBOW predicts a word from the words around it, "
         "skip-gram the words around it from the word; GloVe fits the global co-occurrence "
         "counts. Words used in the same contexts end up close together.")

MapResult = tuple["TrainedVectors", list[str], np.ndarray]


def _train_job(job: Job, source: tuple[str, str], method: str, params: dict[str, Any],
               settings: Settings) -> MapResult:
    from core.lab.evaluate import trainer
    from core.lab.vectors import word_map

    text = load_text(job, source, settings)
    tv = trainer(method)(text.sentences, progress=reporter(job), cancelled=lambda: job.cancelled,
                         **params)
    words, coords = word_map(tv)
    return tv, words, coords


def _dims_job(job: Job, source: tuple[str, str], method: str, dims: list[int],
              params: dict[str, Any], settings: Settings) -> list[DimensionRow]:
    from core.lab.evaluate import dimension_experiment

    text = load_text(job, source, settings)
    return dimension_experiment(text.sentences, dims, method, progress=reporter(job),
                                cancelled=lambda: job.cancelled, **params)


def _method_box() -> QComboBox:
    box = QComboBox()
    for label, value in METHODS:
        box.addItem(label, value)
    return box


class VectorsTab(LabTab):
    def __init__(self, page: LabPage) -> None:
        super().__init__(page)
        self.tv: TrainedVectors | None = None
        col = self.col
        self.method = _method_box()
        self.dim = spin_box(1, 1000, 20)
        self.window_size = spin_box(1, 50, 3)
        self.min_count = spin_box(1, 1000, 1)
        self.epochs = spin_box(1, 10000, 30)
        col.addLayout(labelled_row([("Method", self.method), ("Dimensions", self.dim),
                                    ("Window", self.window_size), ("Min. count", self.min_count),
                                    ("Epochs", self.epochs)]))
        self.run = self.add_run_bar("Train", self.train, TRAIN_GROUP, EMPTY)
        split = QSplitter()
        self.map = WordMap()
        split.addWidget(self.map)
        side = QWidget()
        grid = QGridLayout(side)
        self.word = QLineEdit("cat")
        self.nearest_button = QPushButton("Nearest words")
        self.nearest_table = QTableWidget()
        self.a, self.b, self.c = QLineEdit("cat"), QLineEdit("dog"), QLineEdit("apple")
        self.analogy_button = QPushButton("a − b + c")
        self.analogy_table = QTableWidget()
        self.note = QLabel("")
        self.note.setWordWrap(True)
        grid.addWidget(self.word, 0, 0, 1, 2)
        grid.addWidget(self.nearest_button, 0, 2)
        grid.addWidget(self.nearest_table, 1, 0, 1, 3)
        abc = QHBoxLayout()
        for part in (self.a, QLabel("−"), self.b, QLabel("+"), self.c):
            abc.addWidget(part)
        grid.addLayout(abc, 2, 0, 1, 2)
        grid.addWidget(self.analogy_button, 2, 2)
        grid.addWidget(self.analogy_table, 3, 0, 1, 3)
        grid.addWidget(self.note, 4, 0, 1, 3)
        split.addWidget(side)
        split.setSizes([640, 360])
        col.addWidget(split, 1)
        self.word.returnPressed.connect(self.show_nearest)
        self.nearest_button.clicked.connect(self.show_nearest)
        self.analogy_button.clicked.connect(self.show_analogy)
        self._explore(False)

    def _explore(self, on: bool) -> None:
        for w in (self.nearest_button, self.analogy_button):
            w.setEnabled(on)

    def params(self) -> dict[str, Any]:
        return {"window": self.window_size.value(), "min_count": self.min_count.value(),
                "epochs": self.epochs.value()}

    def train(self) -> Worker[MapResult]:
        method = str(self.method.currentData())
        return self.run_job(
            self.run, f"Training {self.method.currentText()}…", _train_job,
            self.page.source.source(), method, {**self.params(), "dim": self.dim.value()},
            self.ctx.settings, group=TRAIN_GROUP, on_result=self._trained,
            on_cancelled=self._stopped)

    def _trained(self, result: MapResult) -> None:
        tv, words, coords = result
        self._show(tv, words, coords)
        cost = f"; cost {tv.losses[0]:.4f} → {tv.losses[-1]:.4f}" if tv.losses else ""
        self.run.finished(f"{tv.method}: {len(tv.keyed):,} words, {tv.dimension} dimensions, "
                          f"{tv.epochs} epochs in {tv.seconds:.2f} s{cost}")

    def _stopped(self, partial: object) -> None:
        from core.lab.vectors import TrainedVectors, word_map

        if isinstance(partial, TrainedVectors) and partial.epochs > 0:
            words, coords = word_map(partial)  # (a few hundred rows: instant)
            self._show(partial, words, coords)
            self.run.idle(f"Stopped after {partial.epochs} of {partial.params.get('epochs')} "
                          "epochs: the vectors below are what it had learnt by then.")
        else:
            self.run.idle("Stopped before the first epoch ended; nothing was trained.")

    def _show(self, tv: TrainedVectors, words: list[str], coords: np.ndarray) -> None:
        self.tv = tv
        self.page.set_vectors(tv)
        self.map.set_words(words, coords)
        self._explore(True)
        self.show_nearest()

    def show_nearest(self) -> None:
        from core.lab.vectors import nearest

        if self.tv is None:
            return
        try:
            found = nearest(self.tv, self.word.text().strip() or "?")
        except CorralError as exc:
            self.note.setText(exc.sentence())
            return
        self.note.setText("")
        fill_table(self.nearest_table, ["word", "cosine"], found, shade=True)
        self.map.highlight([self.word.text().strip().lower()] + [w for w, _ in found])

    def show_analogy(self) -> None:
        from core.lab.vectors import analogy

        if self.tv is None:
            return
        try:
            found = analogy(self.tv, self.a.text().strip(), self.b.text().strip(), self.c.text().strip())
        except CorralError as exc:
            self.note.setText(exc.sentence())
            return
        self.note.setText("")
        fill_table(self.analogy_table, ["word", "cosine"], found, shade=True)


class DimensionsTab(LabTab):
    """The same text at several dimension counts: quality score and training time."""

    def __init__(self, page: LabPage) -> None:
        super().__init__(page)
        self.rows: list[DimensionRow] = []
        col = self.col
        self.dims = QLineEdit("5, 10, 25, 50, 100")
        self.dims.setMaximumWidth(260)
        self.method = _method_box()
        col.addLayout(labelled_row([("Dimensions", self.dims), ("Method", self.method)]))
        explain = QLabel("Window, minimum count and epochs are those of the Words to vectors tab. "
                         "The score is the rank correlation with people's similarity judgements "
                         "(gensim's wordsim353), over the word pairs the text covers; analogy "
                         "accuracy uses gensim's questions-words.txt the same way.")
        explain.setWordWrap(True)
        col.addWidget(explain)
        self.run = self.add_run_bar("Run experiment", self.start, DIMS_GROUP)
        split = QSplitter()
        self.table = QTableWidget()
        split.addWidget(self.table)
        self.score_plot = LinePlot("dimensions", "score")
        self.time_plot = LinePlot("dimensions", "seconds")
        split.addWidget(self.score_plot)
        split.addWidget(self.time_plot)
        split.setSizes([470, 400, 400])
        col.addWidget(split, 1)

    def start(self) -> Worker[list[DimensionRow]] | None:
        try:
            dims = [int(x) for x in self.dims.text().replace(",", " ").split()]
        except ValueError:
            self.run.idle("Give the dimension counts as numbers, e.g. 5, 10, 25.")
            return None
        return self.run_job(
            self.run, "Training at each size…", _dims_job, self.page.source.source(),
            str(self.method.currentData()), dims, self.page.vectors_tab.params(),
            self.ctx.settings, group=DIMS_GROUP, on_result=self._done, on_cancelled=self._stopped)

    def _stopped(self, partial: object) -> None:
        rows = partial if isinstance(partial, list) else []
        self.show_rows(rows)
        self.run.idle(f"Stopped: {len(rows)} size(s) done.")

    def _done(self, rows: list[DimensionRow]) -> None:
        self.show_rows(rows)
        covered = rows[0].quality if rows else None
        note = "" if covered is None else (
            f" Coverage: {covered.wordsim_pairs} of {covered.wordsim_total} word pairs, "
            f"{covered.analogy_questions} of {covered.analogy_total} analogies.")
        self.run.finished(f"Done: {len(rows)} sizes.{note}")

    def show_rows(self, rows: list[DimensionRow]) -> None:
        self.rows = rows

        def num(x: float | None) -> object:
            return "–" if x is None else round(x, 3)

        fill_table(self.table, ["dims", "seconds", "score", "pairs", "analogies", "asked"],
                   [[r.dimension, round(r.seconds, 3), num(r.quality.wordsim_spearman),
                     r.quality.wordsim_pairs, num(r.quality.analogy_accuracy),
                     r.quality.analogy_questions] for r in rows])
        xs = [r.dimension for r in rows]
        scored = [(r.dimension, r.quality.score) for r in rows if r.quality.score is not None]
        self.score_plot.set_series([("score", [d for d, _ in scored], [s for _, s in scored], "#2ca02c")]
                                   if scored else [])
        self.time_plot.set_series([("training time", xs, [r.seconds for r in rows], "#1f77b4")])
