"""Embeddings page: a similarity heatmap of sentences (two embedders side by side) and a
2-D map of a knowledge base's chunks with a query and its nearest neighbours."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.analysis.similarity import (
    MEASURES,
    display_order,
    matrix_csv,
    reorder,
    similarity_matrix,
)
from core.config import OllamaSettings, Settings
from desktop.context import AppContext
from desktop.jobs import Job, Worker
from desktop.pages.embeddings.plots import CorpusMapView, HeatmapView

if TYPE_CHECKING:
    from core.analysis.corpus import Corpus
    from core.analysis.projection import Neighbour, Projector

MATRIX_EMPTY = (
    "Enter a few sentences, one per line, and press Compare. Each sentence becomes a vector; "
    "cosine similarity is 1 for the same meaning and near 0 for unrelated ones, while "
    "euclidean and manhattan distances are 0 for identical vectors and grow apart."
)
MAP_EMPTY = (
    "A corpus map puts every chunk of a knowledge base on a flat map: chunks with similar "
    "meaning land near each other. Pick a knowledge base and press Compute map, then type a "
    "question to see which chunks are nearest."
)
MATRIX_STOPPED = "Stopped: the matrix below is for the sentences compared before."
MAP_STOPPED = "Stopped: the map below is still the one computed before."
QUERY_STOPPED = "The query was stopped before its neighbours were found."

#: the job groups of this page: a newer job of a group supersedes the older one
MATRIX_GROUP = "embeddings-matrix"
KBS_GROUP = "embeddings-kbs"
MAP_GROUP = "embeddings-map"
QUERY_GROUP = "embeddings-query"

#: per embedder: (its name, the sentences' vectors)
EmbedderVectors = list[tuple[str, np.ndarray]]
#: what a corpus map job returns: the chunks, the fitted projection, a 2-D point per chunk
MapResult = tuple["Corpus", "Projector", np.ndarray]
#: what a query job returns: where the query lands on the map, and its nearest chunks
QueryResult = tuple[np.ndarray, list["Neighbour"]]


def _embed_job(job: Job, texts: list[str], specs: list[str], mode: str,
               ollama: OllamaSettings) -> EmbedderVectors:
    from core.rag.embedder import shared_embedder

    out: EmbedderVectors = []
    for n, spec in enumerate(specs):
        job.check()
        job.progress(n / len(specs), f"Embedding with {spec}")
        emb = shared_embedder(spec, mode, ollama=ollama)
        out.append((emb.name, emb.embed(texts)))
    return out


def _kb_names_job(job: Job, settings: Settings) -> list[str]:
    from core.analysis.corpus import knowledge_base_names

    return knowledge_base_names(settings)


def _map_job(job: Job, source: str | Corpus, method: str, settings: Settings) -> MapResult:
    """Load (a knowledge base name) or take (a Corpus) the chunks, then project them."""
    from core.analysis.corpus import load_corpus
    from core.analysis.projection import Projector

    if isinstance(source, str):
        corpus = load_corpus(source, settings=settings,
                             progress=lambda f, t: job.progress(0.3 * f, t),
                             cancelled=lambda: job.cancelled)
    else:
        corpus = source
    job.check()
    projector = Projector(method)
    coords = projector.fit(corpus.vectors, progress=lambda f, t: job.progress(0.3 + 0.7 * f, t))
    return corpus, projector, coords


def _query_job(job: Job, corpus: Corpus, projector: Projector, query: str, k: int, by: str,
               ollama: OllamaSettings) -> QueryResult:
    from core.analysis.projection import nearest_neighbours
    from core.rag.embedder import shared_embedder

    job.progress(None, "Embedding the query")
    embedder = shared_embedder(corpus.embedder_spec, corpus.embedder_mode, ollama=ollama)
    q = embedder.embed([query])[0]
    job.check()
    hits = nearest_neighbours(corpus.vectors, q, k=k, by=by)
    return projector.place(q)[0], hits


class EmbeddingsPage(QWidget):
    map_ready = Signal()
    query_ready = Signal()
    matrix_ready = Signal()

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.vectors: EmbedderVectors = []
        self.sentences: list[str] = []
        self.corpus: Corpus | None = None  # the chunks on the map now
        self.projector: Projector | None = None
        self.coords: np.ndarray | None = None
        self.hits: list[Neighbour] = []
        # Counts map requests: a query belongs to the map shown when it started, and its
        # neighbours are dropped once another map has been asked for.
        outer = QVBoxLayout(self)
        title = QLabel("Embeddings")
        title.setObjectName("pageTitle")
        outer.addWidget(title)
        self.tabs = QTabWidget()
        outer.addWidget(self.tabs, 1)
        self.tabs.addTab(self._build_matrix(), "Similarity matrix")
        self.tabs.addTab(self._build_map(), "Corpus map")
        self._kbs_listed = False
        ctx.bus.knowledge_bases_changed.connect(self.refresh_knowledge_bases)
        self.tabs.currentChanged.connect(self._tab_changed)

    def _tab_changed(self, index: int) -> None:
        if index == 1 and not self._kbs_listed:
            self._kbs_listed = True
            self.refresh_knowledge_bases()

    # --- similarity matrix ----------------------------------------------------------------

    def _build_matrix(self) -> QWidget:
        page = QWidget()
        col = QVBoxLayout(page)
        self.sentence_box = QPlainTextEdit()
        self.sentence_box.setPlaceholderText("One sentence per line…")
        self.sentence_box.setMaximumHeight(130)
        col.addWidget(self.sentence_box)
        row = QHBoxLayout()
        self.embedder_a = self._embedder_combo(self.ctx.settings.embedder.default or "minilm")
        self.compare = QCheckBox("Compare with")
        self.embedder_b = self._embedder_combo("ollama:nomic-embed-text")
        self.embedder_b.setEnabled(False)
        self.compare.toggled.connect(self.embedder_b.setEnabled)
        self.measure_box = QComboBox()
        for name, m in MEASURES.items():
            self.measure_box.addItem(m.label, name)
            self.measure_box.setItemData(self.measure_box.count() - 1, m.explanation, Qt.ItemDataRole.ToolTipRole)
        self.order = QComboBox()
        for value, label in (("input", "As entered"), ("sorted", "Most central first"),
                             ("clustered", "Clustered")):
            self.order.addItem(label, value)
        self.measure_box.currentIndexChanged.connect(self.redraw_matrix)
        self.order.currentIndexChanged.connect(self.redraw_matrix)
        self.compare_button = QPushButton("Compare")
        self.compare_button.setObjectName("primary")
        self.compare_button.clicked.connect(self.compute_matrix)
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.clicked.connect(lambda: self.export_csv())
        self.png_button = QPushButton("Export PNG…")
        self.png_button.clicked.connect(lambda: self.export_png(self.heatmaps))
        # Two rows: what to embed with, then how to show it (one row overflows at 1280 px).
        w: QWidget
        for w in (QLabel("Embedder"), self.embedder_a, self.compare, self.embedder_b):
            row.addWidget(w)
        row.addStretch(1)
        col.addLayout(row)
        row = QHBoxLayout()
        for w in (QLabel("Measure"), self.measure_box, QLabel("Order"), self.order):
            row.addWidget(w)
        row.addStretch(1)
        for w in (self.compare_button, self.csv_button, self.png_button):
            row.addWidget(w)
        col.addLayout(row)
        self.matrix_status = QLabel(MATRIX_EMPTY)
        self.matrix_status.setObjectName("emptyState")
        self.matrix_status.setWordWrap(True)
        col.addWidget(self.matrix_status)
        self.heatmaps: QWidget = QWidget()
        hm = QHBoxLayout(self.heatmaps)
        hm.setContentsMargins(0, 0, 0, 0)
        self.heatmap_a = HeatmapView()
        self.heatmap_b = HeatmapView()
        hm.addWidget(self.heatmap_a)
        hm.addWidget(self.heatmap_b)
        self.heatmap_b.setVisible(False)
        self.heatmaps.setVisible(False)
        col.addWidget(self.heatmaps, 1)
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        col.addWidget(self.legend)
        self.csv_button.setEnabled(False)
        self.png_button.setEnabled(False)
        return page

    def _embedder_combo(self, default: str) -> QComboBox:
        box = QComboBox()
        box.setEditable(True)
        for spec in dict.fromkeys([default, "minilm"]):
            box.addItem(spec)
        box.setCurrentText(default)
        box.setMinimumWidth(220)
        return box

    def set_sentences(self, sentences: list[str]) -> None:
        self.sentence_box.setPlainText("\n".join(sentences))

    def compute_matrix(self) -> Worker[EmbedderVectors] | None:
        texts = [t.strip() for t in self.sentence_box.toPlainText().splitlines() if t.strip()]
        if len(texts) < 2:
            self.matrix_status.setText("Enter at least two sentences, one per line. " + MATRIX_EMPTY)
            return None
        specs = [self.embedder_a.currentText().strip() or "minilm"]
        if self.compare.isChecked() and self.embedder_b.currentText().strip():
            specs.append(self.embedder_b.currentText().strip())
        self.matrix_status.setText("Embedding…")
        return self.ctx.jobs.run(
            _embed_job, texts, specs, self.ctx.settings.embedder.mode, self.ctx.settings.ollama,
            group=MATRIX_GROUP,
            on_progress=lambda fraction, text: self.matrix_status.setText(text + "…"),
            on_result=partial(self._matrix_done, texts),
            on_error=lambda exc: self.matrix_status.setText(self.ctx.show_error(exc)),
            on_cancelled=self._matrix_stopped,
        )

    def _matrix_stopped(self, unfinished: object) -> None:
        """A cancelled matrix paints nothing: the earlier one stays, and the status says so."""
        self.matrix_status.setText(MATRIX_STOPPED if self.vectors else MATRIX_EMPTY)

    def _matrix_done(self, texts: list[str], results: EmbedderVectors) -> None:
        self.sentences = texts
        self.vectors = results
        self.redraw_matrix()
        self.matrix_ready.emit()

    def current_matrices(self) -> list[tuple[str, np.ndarray, list[int]]]:
        """(embedder name, matrix in display order, order) per embedder."""
        metric = self.measure_box.currentData()
        out: list[tuple[str, np.ndarray, list[int]]] = []
        for name, vecs in self.vectors:
            m = similarity_matrix(vecs, metric)
            order = display_order(m, metric, self.order.currentData())
            out.append((name, reorder(m, order), order))
        return out

    def redraw_matrix(self) -> None:
        if not self.vectors:
            return
        metric = self.measure_box.currentData()
        views = [self.heatmap_a, self.heatmap_b]
        mats = self.current_matrices()
        for view, (name, m, order) in zip(views, mats, strict=False):
            view.set_title(f"{name} — {MEASURES[metric].label.lower()}")
            view.set_matrix(m, [self.sentences[i] for i in order], metric)
        self.heatmap_b.setVisible(len(mats) > 1)
        self.heatmaps.setVisible(True)
        order = mats[0][2]
        self.legend.setText("   ".join(f"{k + 1}. {self.sentences[i]}" for k, i in enumerate(order)))
        self.matrix_status.setText(MEASURES[metric].explanation + " Brighter cells are closer.")
        self.csv_button.setEnabled(True)
        self.png_button.setEnabled(True)

    def matrix_csv_text(self) -> str:
        parts = []
        for name, m, order in self.current_matrices():
            labels = [self.sentences[i] for i in order]
            parts.append(f"# {name}, {self.measure_box.currentData()}\n" + matrix_csv(m, labels))
        return "\n".join(parts)

    def export_csv(self, path: str | None = None) -> str | None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export CSV", "similarity.csv", "CSV (*.csv)")
        if not path:
            return None
        Path(path).write_text(self.matrix_csv_text(), encoding="utf-8")
        self.ctx.status(f"Saved {path}")
        return path

    def export_png(self, widget: QWidget, path: str | None = None) -> str | None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export PNG", "plot.png", "PNG (*.png)")
        if not path:
            return None
        if not widget.grab().save(path, "PNG"):
            self.ctx.show_error(f"Could not write {path}.")
            return None
        self.ctx.status(f"Saved {path}")
        return path

    # --- corpus map ---------------------------------------------------------------------

    def _build_map(self) -> QWidget:
        from core.analysis.projection import METHODS, available_methods

        page = QWidget()
        col = QVBoxLayout(page)
        row = QHBoxLayout()
        self.kb_box = QComboBox()
        self.kb_box.setMinimumWidth(180)
        self.method = QComboBox()
        for name in available_methods():
            self.method.addItem(name.upper() if name != "tsne" else "t-SNE", name)
            self.method.setItemData(self.method.count() - 1, METHODS[name], Qt.ItemDataRole.ToolTipRole)
        self.map_button = QPushButton("Compute map")
        self.map_button.setObjectName("primary")
        self.map_button.clicked.connect(lambda: self.compute_map())
        self.map_button.setEnabled(False)
        self.map_png = QPushButton("Export PNG…")
        self.map_png.clicked.connect(lambda: self.export_png(self.map_view))
        self.map_png.setEnabled(False)
        w: QWidget
        for w in (QLabel("Knowledge base"), self.kb_box, QLabel("Projection"), self.method,
                  self.map_button):
            row.addWidget(w)
        row.addStretch(1)
        row.addWidget(self.map_png)
        col.addLayout(row)
        qrow = QHBoxLayout()
        self.query = QLineEdit()
        self.query.setPlaceholderText("Type a question to place it on the map…")
        self.query.returnPressed.connect(self.find_neighbours)
        self.k = QSpinBox()
        self.k.setRange(1, 100)
        self.k.setValue(5)
        self.by = QComboBox()
        self.by.addItem("by cosine", "cosine")
        self.by.addItem("by euclidean", "euclidean")
        self.find_button = QPushButton("Find neighbours")
        self.find_button.clicked.connect(self.find_neighbours)
        self.find_button.setEnabled(False)
        for w in (self.query, QLabel("top"), self.k, self.by, self.find_button):
            qrow.addWidget(w)
        col.addLayout(qrow)
        self.map_progress = QProgressBar()
        self.map_progress.setVisible(False)
        col.addWidget(self.map_progress)
        self.map_status = QLabel(MAP_EMPTY)
        self.map_status.setObjectName("emptyState")
        self.map_status.setWordWrap(True)
        col.addWidget(self.map_status)
        split = QSplitter()
        self.map_view: CorpusMapView = CorpusMapView()
        self.map_view.chunk_clicked.connect(self.open_chunk)
        side = QWidget()
        scol = QVBoxLayout(side)
        scol.setContentsMargins(0, 0, 0, 0)
        self.neighbours = QTableWidget(0, 5)
        self.neighbours.setHorizontalHeaderLabels(
            ["#", "Chunk", "Cosine sim.", "Cosine dist.", "Euclidean"])
        self.neighbours.verticalHeader().setVisible(False)
        self.neighbours.cellClicked.connect(lambda r, c: self.open_chunk(self.hits[r].index))
        self.chunk_view = QTextBrowser()
        self.chunk_view.setPlaceholderText("Click a point to read its chunk.")
        self.to_matrix = QPushButton("Add this chunk to the similarity matrix")
        self.to_matrix.setEnabled(False)
        self.to_matrix.clicked.connect(self._chunk_to_matrix)
        scol.addWidget(self.neighbours, 1)
        scol.addWidget(self.chunk_view, 1)
        scol.addWidget(self.to_matrix)
        split.addWidget(self.map_view)
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([640, 480])
        col.addWidget(split, 1)
        self._open_chunk: int | None = None
        return page

    def refresh_knowledge_bases(self) -> Worker[list[str]]:
        """List the knowledge bases in a worker (opening the store can take a moment)."""
        return self.ctx.jobs.run(_kb_names_job, self.ctx.settings, group=KBS_GROUP,
                                 on_result=self._set_knowledge_bases,
                                 on_error=self._knowledge_bases_failed)

    def _knowledge_bases_failed(self, exc: BaseException) -> None:
        # Not "there is no knowledge base yet": the store could not be read, and that is said.
        self.kb_box.clear()
        self.map_button.setEnabled(False)
        if self.corpus is None:
            self.map_status.setText(self.ctx.show_error(exc))
        else:
            self.ctx.show_error(exc)

    def _set_knowledge_bases(self, names: list[str]) -> None:
        current = self.kb_box.currentText()
        self.kb_box.clear()
        self.kb_box.addItems(names)
        if current in names:
            self.kb_box.setCurrentText(current)
        self.map_button.setEnabled(bool(names))
        if not names and self.corpus is None:
            self.map_status.setText(
                MAP_EMPTY + " (There is no knowledge base yet: create one on the Documents page.)")

    def compute_map(self, corpus: Corpus | None = None) -> Worker[MapResult] | None:
        """Map a knowledge base (the chosen one) or a given ``Corpus`` in a worker.

        A new map supersedes the map job before it and cancels a running query: that query
        belongs to the map it was started on, and its neighbours never land on this one."""
        source: str | Corpus = corpus if corpus is not None else self.kb_box.currentText()
        if isinstance(source, str) and not source:
            self.map_status.setText(MAP_EMPTY)
            return None
        self._forget_queries()
        self.map_progress.setVisible(True)
        self.map_progress.setValue(0)
        self.map_status.setText("Reading the chunks…")
        return self.ctx.jobs.run(
            _map_job, source, self.method.currentData() or "pca", self.ctx.settings,
            group=MAP_GROUP,
            on_progress=self._map_progress,
            on_result=self._map_done,
            on_error=self._map_failed,
            on_cancelled=self._map_stopped,
        )

    def _forget_queries(self) -> None:
        """Another map is on its way: running queries stop, and what they found is dropped."""
        self.ctx.jobs.drop(QUERY_GROUP)

    def _map_progress(self, fraction: float | None, text: str) -> None:
        if fraction is not None:
            self.map_progress.setRange(0, 1000)
            self.map_progress.setValue(int(fraction * 1000))
        self.map_status.setText(text)

    def _map_failed(self, exc: BaseException) -> None:
        self.map_progress.setVisible(False)
        self.map_status.setText(self.ctx.show_error(exc))

    def _map_stopped(self, unfinished: object) -> None:
        """A cancelled map paints nothing, even if it got to the end: the earlier map stays."""
        self.map_progress.setVisible(False)
        self.map_status.setText(MAP_STOPPED if self.corpus is not None else MAP_EMPTY)

    def _map_done(self, result: MapResult) -> None:
        corpus, projector, coords = result
        self._forget_queries()  # a query started on the map before never lands on this one
        self.corpus, self.projector, self.coords = corpus, projector, coords
        self.map_progress.setVisible(False)
        self.hits = []
        self.neighbours.setRowCount(0)
        self.chunk_view.clear()
        self._open_chunk = None
        self.to_matrix.setEnabled(False)
        if len(corpus) == 0:
            self.map_view.set_points(np.zeros((0, 2), dtype=np.float32),
                                     np.zeros(0, dtype=np.int32), [], [], [])
            self.find_button.setEnabled(False)
            self.map_png.setEnabled(False)
            self.map_status.setText("This knowledge base has no chunks yet: index some files first.")
            return
        groups, legend = corpus.document_index()
        names = [corpus.describe(i) for i in range(len(corpus))]
        self.map_view.set_points(coords, groups, legend, corpus.texts, names)
        extra = ""
        if projector.explained is not None:
            kept = float(np.sum(projector.explained)) * 100
            extra = f" The two PCA axes keep {kept:.0f}% of the spread."
        self.map_status.setText(
            f"{len(corpus):,} chunks from {len(set(corpus.documents))} documents."
            f"{extra} Colours are documents; hover to read, click to open.")
        self.find_button.setEnabled(True)
        self.map_png.setEnabled(True)
        self.map_ready.emit()

    def find_neighbours(self) -> Worker[QueryResult] | None:
        """Place the query on the map shown now and find its nearest chunks (in a worker).

        The query belongs to that map: once another map is asked for, it is cancelled, and
        whatever it found is dropped rather than drawn on a map it was not computed for."""
        text = self.query.text().strip()
        corpus, projector = self.corpus, self.projector
        if not text or corpus is None or projector is None or len(corpus) == 0:
            return None
        self.map_status.setText("Embedding the query…")
        return self.ctx.jobs.run(
            _query_job, corpus, projector, text, self.k.value(), self.by.currentData(),
            self.ctx.settings.ollama, group=QUERY_GROUP,
            on_result=partial(self._query_done, corpus, self.by.currentText()),
            on_error=self._query_failed,
            on_cancelled=self._query_stopped,
        )

    def _query_done(self, corpus: Corpus, by_label: str, result: QueryResult) -> None:
        at, self.hits = result
        self.map_view.show_query(at, [h.index for h in self.hits])
        self.neighbours.setRowCount(len(self.hits))
        for r, h in enumerate(self.hits):
            cells = [str(r + 1), corpus.describe(h.index), f"{h.cosine:.4f}",
                     f"{h.cosine_distance:.4f}", f"{h.euclidean:.4f}"]
            for c, value in enumerate(cells):
                item = QTableWidgetItem(value)
                item.setToolTip(corpus.texts[h.index][:500])
                self.neighbours.setItem(r, c, item)
        self.neighbours.resizeColumnsToContents()
        self.map_status.setText(
            f"The star is your query; red rings mark its {len(self.hits)} nearest chunks "
            f"({by_label}).")
        self.query_ready.emit()

    def _query_failed(self, exc: BaseException) -> None:
        self.map_status.setText(self.ctx.show_error(exc))

    def _query_stopped(self, _unfinished: object) -> None:
        self.map_status.setText(QUERY_STOPPED)

    def open_chunk(self, i: int) -> None:
        if self.corpus is None:
            return
        self._open_chunk = i
        self.chunk_view.setPlainText(f"{self.corpus.describe(i)}\n\n{self.corpus.texts[i]}")
        self.to_matrix.setEnabled(True)

    def _chunk_to_matrix(self) -> None:
        if self._open_chunk is None or self.corpus is None:
            return
        text = " ".join(self.corpus.texts[self._open_chunk].split())
        current = self.sentence_box.toPlainText().rstrip()
        self.sentence_box.setPlainText((current + "\n" if current else "") + text)
        self.tabs.setCurrentIndex(0)
