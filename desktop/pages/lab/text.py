"""Lab tabs on words as text: the co-occurrence matrix (table and heatmap) and stemming vs
lemmatization, with keyword recall with and without stemming on a knowledge base."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSplitter,
    QTableWidget,
)

from core.config import Settings
from desktop.jobs import Job, Worker
from desktop.pages.lab.jobs import load_text, reporter
from desktop.pages.lab.widgets import Heatmap, LabTab, fill_table, labelled_row, spin_box

if TYPE_CHECKING:
    from core.lab.stemming import RecallResult, StemRow
    from desktop.pages.lab.page import LabPage

COOCCUR_GROUP = "lab-cooccur"
STEM_GROUP = "lab-stem"
RECALL_GROUP = "lab-recall"


@dataclass
class CooccurResult:
    name: str
    words: list[str]  # the most frequent words shown
    matrix: np.ndarray  # their block of the matrix
    vocabulary: int
    nonzeros: int


def _cooccur_job(job: Job, source: tuple[str, str], window: int, limit: int,
                 settings: Settings) -> CooccurResult:
    from core.lab.cooccur import cooccurrence, vocabulary

    text = load_text(job, source, settings)
    job.check()
    job.progress(None, f"Counting pairs in {text.tokens:,} words")
    vocab = vocabulary(text.sentences)
    matrix = cooccurrence(text.sentences, vocab, window)
    n = min(limit, len(vocab))
    return CooccurResult(text.name, vocab.words[:n], matrix[:n, :n].toarray(), len(vocab),
                         int(matrix.nnz))


def _stem_job(job: Job, words: list[str], pos: str | None) -> list[StemRow]:
    from core.lab.stemming import stem_and_lemma

    return stem_and_lemma(words, pos)


def _recall_job(job: Job, kb: str, settings: Settings) -> RecallResult:
    from core.lab.corpus import kb_chunks
    from core.lab.stemming import keyword_recall

    chunks = kb_chunks(kb, settings=settings, progress=reporter(job), cancelled=lambda: job.cancelled)
    return keyword_recall(chunks, progress=reporter(job), cancelled=lambda: job.cancelled)


class CooccurTab(LabTab):
    def __init__(self, page: LabPage) -> None:
        super().__init__(page)
        self.window_size = spin_box(1, 50, 2)
        self.limit = spin_box(2, 40, 12)
        self.col.addLayout(labelled_row([("Window", self.window_size),
                                         ("Most frequent words", self.limit)]))
        self.run = self.add_run_bar(
            "Count", self.count, COOCCUR_GROUP,
            "How often each pair of words stands within the window, each time weighted "
            "1/distance, as GloVe counts them. Try the cat/dog preset.")
        split = QSplitter()
        self.table = QTableWidget()
        self.heatmap = Heatmap()
        split.addWidget(self.table)
        split.addWidget(self.heatmap)
        split.setSizes([520, 480])
        self.col.addWidget(split, 1)

    def count(self) -> Worker[CooccurResult]:
        return self.run_job(self.run, "Counting…", _cooccur_job, self.page.source.source(),
                            self.window_size.value(), self.limit.value(), self.ctx.settings,
                            group=COOCCUR_GROUP, on_result=self._done)

    def _done(self, result: CooccurResult) -> None:
        rows = [[float(v) if v else "·" for v in r] for r in result.matrix]
        fill_table(self.table, result.words, rows, shade=True, row_headers=result.words)
        self.heatmap.set_matrix(result.matrix, result.words)
        shown = "" if len(result.words) == result.vocabulary else \
            f" (the {len(result.words)} most frequent shown)"
        self.run.finished(f"{result.name}: {result.vocabulary:,} words{shown}, "
                          f"{result.nonzeros:,} nonzero cells, window {self.window_size.value()}.")


class StemTab(LabTab):
    def __init__(self, page: LabPage) -> None:
        super().__init__(page)
        col = self.col
        row = QHBoxLayout()
        self.words = QLineEdit("running happily better studies mice went")
        self.part_of_speech = QComboBox()
        # (not None as item data: PySide6 6.12's currentData() drops a reference to None)
        self.part_of_speech.addItem("Part of speech: best guess", "")
        for label, value in (("adjective", "adj"), ("noun", "noun"), ("verb", "verb"),
                             ("adverb", "adv")):
            self.part_of_speech.addItem(label, value)
        row.addWidget(QLabel("Words"))
        row.addWidget(self.words, 1)
        row.addWidget(self.part_of_speech)
        col.addLayout(row)
        self.run = self.add_run_bar(
            "Stem and lemmatize", self.stem, STEM_GROUP,
            "A stem is a cut (Snowball): happily → happili. A lemma is the dictionary form "
            "(simplemma): better → good.")
        self.words.returnPressed.connect(self.stem)
        self.part_of_speech.currentIndexChanged.connect(self.stem)
        self.table = QTableWidget()
        col.addWidget(self.table, 1)
        self.recall = self.add_run_bar(
            "Measure keyword recall", self.measure, RECALL_GROUP,
            "Pick a knowledge base as the text, then measure how often its keyword search finds "
            "the chunk a generated query came from, with and without stemming.")
        self.examples = QTableWidget()
        col.addWidget(self.examples, 1)

    def stem(self) -> Worker[list[StemRow]] | None:
        words = self.words.text().split()
        if not words:
            self.run.idle("Type one or more words.")
            return None
        return self.run_job(self.run, "Looking the words up…", _stem_job, words,
                            self.part_of_speech.currentData() or None, group=STEM_GROUP,
                            on_result=self._stemmed)

    def _stemmed(self, rows: list[StemRow]) -> None:
        fill_table(self.table, ["word", "stem (Snowball)", "lemma (simplemma)"],
                   [[r.word, r.stem, r.lemma] for r in rows])
        self.run.finished(f"{len(rows)} words.")

    def measure(self) -> Worker[RecallResult] | None:
        kind, name = self.page.source.source()
        if kind != "kb":
            self.recall.idle("Recall is measured on a knowledge base: pick one as the text above.")
            return None
        return self.run_job(self.recall, f"Reading {name}…", _recall_job, name,
                            self.ctx.settings, group=RECALL_GROUP, on_result=self._measured)

    def _measured(self, result: RecallResult) -> None:
        fill_table(self.examples, ["query", "chunk", "plain", "stemmed"],
                   [[e["query"], " ".join(str(e["chunk"]).split())[:90],
                     "found" if e["plain_hit"] else "missed",
                     "found" if e["stemmed_hit"] else "missed"] for e in result.examples])
        self.recall.finished(f"Recall@{result.k} on {len(result.queries)} generated queries: "
                             f"{result.plain_recall:.0%} on plain words, "
                             f"{result.stemmed_recall:.0%} on stems.")
