"""Embeddings page: a similarity heatmap of sentences (two embedders side by side) and a
2-D map of a knowledge base's chunks with a query and its nearest neighbours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from desktop.context import AppContext
from desktop.pages.embeddings.plots import CorpusMapView, HeatmapView
from desktop.jobs import Worker

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


def _embed_job(job: Any, texts: list[str], specs: list[str], mode: str) -> list[tuple[str, Any]]:
    from core.rag.embedder import shared_embedder

    out = []
    for n, spec in enumerate(specs):
        job.check()
        job.progress(n / len(specs), f"Embedding with {spec}")
        emb = shared_embedder(spec, mode)
        out.append((emb.name, emb.embed(texts)))
    return out


def _kb_names_job(job: Any, settings: Any) -> list[str]:
    from core.analysis.corpus import knowledge_base_names

    return knowledge_base_names(settings)


def _map_job(job: Any, source: Any, method: str) -> tuple[Any, Any, np.ndarray]:
    """Load (a knowledge base name) or take (a Corpus) the chunks, then project them."""
    from core.analysis.corpus import load_corpus
    from core.analysis.projection import Projector

    if isinstance(source, str):
        corpus = load_corpus(source, progress=lambda f, t: job.progress(0.3 * f, t),
                             cancelled=lambda: job.cancelled)
    else:
        corpus = source
    job.check()
    projector = Projector(method)
    coords = projector.fit(corpus.vectors, progress=lambda f, t: job.progress(0.3 + 0.7 * f, t))
    return corpus, projector, coords


def _query_job(job: Any, corpus: Any, projector: Any, query: str, k: int, by: str) -> Any:
    from core.analysis.projection import nearest_neighbours
    from core.rag.embedder import shared_embedder

    job.progress(None, "Embedding the query")
    q = shared_embedder(corpus.embedder_spec, corpus.embedder_mode).embed([query])[0]
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
        self.vectors: list[tuple[str, np.ndarray]] = []  # per embedder: (name, vectors)
        self.sentences: list[str] = []
        self.corpus: Any = None
        self.projector: Any = None
        self.coords: np.ndarray | None = None
        self.hits: list[Any] = []
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
        self.heatmaps = QWidget()
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

    def compute_matrix(self) -> Worker | None:
        texts = [t.strip() for t in self.sentence_box.toPlainText().splitlines() if t.strip()]
        if len(texts) < 2:
            self.matrix_status.setText("Enter at least two sentences, one per line. " + MATRIX_EMPTY)
            return None
        specs = [self.embedder_a.currentText().strip() or "minilm"]
        if self.compare.isChecked() and self.embedder_b.currentText().strip():
            specs.append(self.embedder_b.currentText().strip())
        worker = Worker(_embed_job, texts, specs, self.ctx.settings.embedder.mode)
        worker.signals.progress.connect(lambda f, t: self.matrix_status.setText(t + "…"))
        worker.signals.finished.connect(lambda res, t=texts: self._matrix_done(t, res))
        worker.signals.failed.connect(lambda e: self._failed(e, self.matrix_status))
        self.matrix_status.setText("Embedding…")
        self.ctx.jobs.start(worker, group="embeddings-matrix")
        return worker

    def _matrix_done(self, texts: list[str], results: list[tuple[str, np.ndarray]]) -> None:
        self.sentences = texts
        self.vectors = results
        self.redraw_matrix()
        self.matrix_ready.emit()

    def current_matrices(self) -> list[tuple[str, np.ndarray, list[int]]]:
        """(embedder name, matrix in display order, order) per embedder."""
        metric = self.measure_box.currentData()
        out = []
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
        m = MEASURES[metric]
        self.matrix_status.setText(m.explanation + " Brighter cells are closer.")
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
        self.map_view = CorpusMapView()
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

    def refresh_knowledge_bases(self) -> Worker:
        """List the knowledge bases in a worker (opening the store can take a moment)."""
        worker = Worker(_kb_names_job, self.ctx.settings)
        worker.signals.finished.connect(self._set_knowledge_bases)
        worker.signals.failed.connect(lambda e: self._set_knowledge_bases([]))
        self.ctx.jobs.start(worker, group="embeddings-kbs")
        return worker

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

    def compute_map(self, corpus: Any = None) -> Worker | None:
        """Map a knowledge base (the chosen one) or a given ``Corpus`` in a worker."""
        source = corpus if corpus is not None else self.kb_box.currentText()
        if not source:
            self.map_status.setText(MAP_EMPTY)
            return None
        worker = Worker(_map_job, source, self.method.currentData() or "pca")
        worker.signals.progress.connect(self._map_progress)
        worker.signals.finished.connect(self._map_done)
        worker.signals.failed.connect(lambda e: self._failed(e, self.map_status))
        self.map_progress.setVisible(True)
        self.map_progress.setValue(0)
        self.map_status.setText("Reading the chunks…")
        self.ctx.jobs.start(worker, group="embeddings-map")
        return worker

    def _map_progress(self, fraction: float, text: str) -> None:
        if fraction >= 0:
            self.map_progress.setRange(0, 1000)
            self.map_progress.setValue(int(fraction * 1000))
        self.map_status.setText(text)

    def _map_done(self, result: tuple[Any, Any, np.ndarray]) -> None:
        self.corpus, self.projector, self.coords = result
        self.map_progress.setVisible(False)
        self.hits = []
        self.neighbours.setRowCount(0)
        if len(self.corpus) == 0:
            self.map_status.setText("This knowledge base has no chunks yet: index some files first.")
            return
        groups, legend = self.corpus.document_index()
        names = [self.corpus.describe(i) for i in range(len(self.corpus))]
        self.map_view.set_points(self.coords, groups, legend, self.corpus.texts, names)
        extra = ""
        if self.projector.explained is not None:
            kept = float(np.sum(self.projector.explained)) * 100
            extra = f" The two PCA axes keep {kept:.0f}% of the spread."
        self.map_status.setText(
            f"{len(self.corpus):,} chunks from {len(set(self.corpus.documents))} documents."
            f"{extra} Colours are documents; hover to read, click to open.")
        self.find_button.setEnabled(True)
        self.map_png.setEnabled(True)
        self.map_ready.emit()

    def find_neighbours(self) -> Worker | None:
        text = self.query.text().strip()
        if not text or self.corpus is None or len(self.corpus) == 0:
            return None
        worker = Worker(_query_job, self.corpus, self.projector, text, self.k.value(),
                        self.by.currentData())
        worker.signals.finished.connect(self._query_done)
        worker.signals.failed.connect(lambda e: self._failed(e, self.map_status))
        self.map_status.setText("Embedding the query…")
        self.ctx.jobs.start(worker, group="embeddings-query")
        return worker

    def _query_done(self, result: tuple[np.ndarray, list[Any]]) -> None:
        at, self.hits = result
        self.map_view.show_query(at, [h.index for h in self.hits])
        self.neighbours.setRowCount(len(self.hits))
        for r, h in enumerate(self.hits):
            cells = [str(r + 1), self.corpus.describe(h.index), f"{h.cosine:.4f}",
                     f"{h.cosine_distance:.4f}", f"{h.euclidean:.4f}"]
            for c, value in enumerate(cells):
                item = QTableWidgetItem(value)
                item.setToolTip(self.corpus.texts[h.index][:500])
                self.neighbours.setItem(r, c, item)
        self.neighbours.resizeColumnsToContents()
        self.map_status.setText(
            f"The star is your query; red rings mark its {len(self.hits)} nearest chunks "
            f"({self.by.currentText()}).")
        self.query_ready.emit()

    def open_chunk(self, i: int) -> None:
        if self.corpus is None:
            return
        self._open_chunk = i
        self.chunk_view.setPlainText(f"{self.corpus.describe(i)}\n\n{self.corpus.texts[i]}")
        self.to_matrix.setEnabled(True)

    def _chunk_to_matrix(self) -> None:
        if self._open_chunk is None:
            return
        text = " ".join(self.corpus.texts[self._open_chunk].split())
        current = self.sentence_box.toPlainText().rstrip()
        self.sentence_box.setPlainText((current + "\n" if current else "") + text)
        self.tabs.setCurrentIndex(0)

    def _failed(self, exc: object, label: QLabel) -> None:
        from core.errors import Cancelled

        self.map_progress.setVisible(False)
        if isinstance(exc, Cancelled):
            return
        label.setText(self.ctx.show_error(exc if isinstance(exc, BaseException) else str(exc)))
