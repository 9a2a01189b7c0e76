"""Lab tabs on models: static vs contextual vectors with mean pooling step by step (MiniLM),
and the embedding-layer classifier beside logistic regression on MiniLM embeddings."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtWidgets import (
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from desktop.jobs import Job, Worker
from desktop.pages.lab.jobs import reporter
from desktop.pages.lab.widgets import LabTab, LinePlot, fill_table, labelled_row, spin_box

if TYPE_CHECKING:
    from core.lab.classify import Comparison
    from core.lab.contextual import ContextTable, PoolingSteps
    from desktop.pages.lab.page import LabPage

CONTEXT_GROUP = "lab-context"
CLASSIFY_GROUP = "lab-classify"
SENTENCES = ("I sat on the river bank and watched the water.\n"
             "The bank approved my loan this morning.\n"
             "She deposited her savings at the bank.")

ContextResult = tuple["ContextTable", "PoolingSteps"]


def _context_job(job: Job, word: str, sentences: list[str], static: np.ndarray | None
                 ) -> ContextResult:
    from core.lab.contextual import context_table, pooling_steps

    job.progress(None, "Running MiniLM on the sentences")
    table = context_table(word, sentences, static)
    job.check()
    return table, pooling_steps(sentences)


def _classify_job(job: Job, csv_path: str, dim: int, epochs: int) -> Comparison:
    from pathlib import Path

    from core.lab.classify import compare, read_labelled_csv, toy_sentiment

    if csv_path:
        texts, labels, classes = read_labelled_csv(Path(csv_path))
    else:
        texts, labels = toy_sentiment()
        classes = ["negative", "positive"]
    return compare(texts, labels, classes=classes, dim=dim, epochs=epochs, progress=reporter(job),
                   cancelled=lambda: job.cancelled)


def steps_html(steps: PoolingSteps) -> str:
    parts = []
    for n, s in enumerate(steps.sentences):
        mask = steps.mask[n]
        toks = " ".join(
            f"<span style='color:{'#263238' if m else '#b0bec5'}'>{html.escape(t)}</span>"
            for t, m in zip(steps.tokens[n], mask, strict=True))
        parts.append(
            f"<p><b>{html.escape(s)}</b><br>"
            f"1. token vectors: {toks} ({steps.token_vectors.shape[2]} numbers each)<br>"
            f"2. attention mask: <tt>{''.join(str(int(m)) for m in mask)}</tt> "
            f"({int(mask.sum())} real tokens; padding greyed out)<br>"
            f"3. mean of the real tokens: length {np.linalg.norm(steps.mean[n]):.4f}<br>"
            f"4. normalised: <tt>{np.round(steps.normalised[n, :4], 4).tolist()} …</tt><br>"
            f"sentence-transformers: <tt>{np.round(steps.library[n, :4], 4).tolist()} …</tt> "
            f"— cosine <b>{steps.cosine[n]:.6f}</b></p>")
    return "".join(parts)


class ContextTab(LabTab):
    def __init__(self, page: LabPage) -> None:
        super().__init__(page)
        col = self.col
        self.word = QLineEdit("bank")
        col.addLayout(labelled_row([("Word", self.word)]))
        self.sentences = QPlainTextEdit(SENTENCES)
        self.sentences.setMaximumHeight(90)
        col.addWidget(self.sentences)
        self.run = self.add_run_bar(
            "Compare", self.compare, CONTEXT_GROUP,
            "word2vec gives a word one vector wherever it stands; MiniLM gives it one per "
            "sentence. Below: how alike those vectors are, and a sentence embedding built by "
            "hand, step by step.")
        split = QSplitter()
        tables = QWidget()
        tcol = QVBoxLayout(tables)
        tcol.setContentsMargins(0, 0, 0, 0)
        tcol.addWidget(QLabel("Contextual (MiniLM token outputs)"))
        self.contextual = QTableWidget()
        tcol.addWidget(self.contextual)
        self.static_label = QLabel("Static (word2vec)")
        tcol.addWidget(self.static_label)
        self.static = QTableWidget()
        tcol.addWidget(self.static)
        split.addWidget(tables)
        self.steps = QTextBrowser()
        split.addWidget(self.steps)
        split.setSizes([420, 580])
        col.addWidget(split, 1)

    def compare(self) -> Worker[ContextResult]:
        word = self.word.text().strip()
        sentences = [s.strip() for s in self.sentences.toPlainText().splitlines() if s.strip()]
        static = None
        tv = self.page.vectors
        if tv is not None and word.lower() in tv.keyed.key_to_index:
            static = np.asarray(tv.keyed[word.lower()])
        return self.run_job(self.run, "Loading MiniLM…", _context_job, word, sentences, static,
                            group=CONTEXT_GROUP, on_result=self._done)

    def _done(self, result: ContextResult) -> None:
        table, steps = result
        heads = [f"[{n}]" for n in range(1, len(table.sentences) + 1)]
        fill_table(self.contextual, heads, [[float(v) for v in r] for r in table.contextual],
                   shade=True, row_headers=heads)
        if table.static is not None:
            self.static_label.setText(f"Static (the {self.page.vectors.method if self.page.vectors else ''} "
                                      "vectors trained on the Words to vectors tab): one vector, "
                                      "so every cell is 1")
            fill_table(self.static, heads, [[float(v) for v in r] for r in table.static],
                       shade=True, row_headers=heads)
        else:
            self.static_label.setText(f"Static: train word vectors that know “{table.word}” on "
                                      "the Words to vectors tab to see its (all-1) table here.")
            self.static.clear()
            self.static.setRowCount(0)
            self.static.setColumnCount(0)
        self.steps.setHtml(steps_html(steps))
        low = float(np.min(steps.cosine))
        self.run.finished(f"Mean pooling by hand matches sentence-transformers: lowest cosine {low:.6f}.")


class ClassifierTab(LabTab):
    def __init__(self, page: LabPage) -> None:
        super().__init__(page)
        self.csv_path = ""
        col = self.col
        self.data_label = QLabel("Data: the built-in toy sentiment set (80 short reviews)")
        self.open_csv = QPushButton("Open CSV…")
        self.open_csv.clicked.connect(self.choose_csv)
        self.dim = spin_box(1, 512, 16)
        self.epochs = spin_box(1, 100000, 60)
        col.addLayout(labelled_row([("Embedding size", self.dim), ("Epochs", self.epochs)],
                                   lead=(self.data_label, self.open_csv)))
        self.run = self.add_run_bar(
            "Train", self.train, CLASSIFY_GROUP,
            "Embedding → mean → Dense → sigmoid (torch), beside logistic regression on MiniLM "
            "sentence embeddings, on the same split.")
        split = QSplitter()
        self.sides: list[tuple[QLabel, QTableWidget]] = []
        for name in ("Embedding layer (torch)", "Logistic regression on MiniLM"):
            box = QWidget()
            bcol = QVBoxLayout(box)
            bcol.setContentsMargins(0, 0, 0, 0)
            label = QLabel(name)
            label.setWordWrap(True)
            table = QTableWidget()
            bcol.addWidget(label)
            bcol.addWidget(table)
            split.addWidget(box)
            self.sides.append((label, table))
        self.loss = LinePlot("epoch", "training loss")
        split.addWidget(self.loss)
        split.setSizes([400, 400, 460])
        col.addWidget(split, 1)

    def choose_csv(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "Labelled sentences (text,label)", "", "CSV (*.csv)")
        if path:
            self.set_csv(path)

    def set_csv(self, path: str) -> None:
        self.csv_path = path
        self.data_label.setText(f"Data: {path}")

    def train(self) -> Worker[Comparison]:
        return self.run_job(self.run, "Training…", _classify_job, self.csv_path, self.dim.value(),
                            self.epochs.value(), group=CLASSIFY_GROUP, on_result=self._done,
                            stopped="Stopped: nothing to compare yet.")

    def _done(self, result: Comparison) -> None:
        heads = [f"predicted {c}" for c in result.classes]
        for (label, table), side in zip(self.sides, (result.embedding, result.minilm), strict=True):
            if side is None:
                continue
            label.setText(f"{side.name}: accuracy {side.accuracy:.1%} ({side.seconds:.2f} s)")
            fill_table(table, heads, side.confusion, shade=True,
                       row_headers=[f"true {c}" for c in result.classes])
        losses = result.embedding.losses
        self.loss.set_series([("embedding layer", range(1, len(losses) + 1), losses, "#d62728")])
        self.run.finished(f"Trained on {result.train_size} sentences, tested on {result.test_size}.")
