"""The Lab page: one tab per step from words to sentence embeddings, on a text the user
picks (a knowledge base, a file or a built-in preset). Every run goes through ctx.jobs and can
be stopped; the page itself only turns clicks into core calls and results into widgets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.config import Settings
from desktop.context import AppContext
from desktop.jobs import Job

if TYPE_CHECKING:
    from core.lab.vectors import TrainedVectors

KBS_GROUP = "lab-kbs"
PRESET_NAMES = {"families": "Preset: two word families (generated)",
                "cat-dog": "Preset: “The cat is fluffy. The dog is fluffy…”",
                "news": "Preset: 300 news stories (gensim's Lee corpus)"}


def _kb_names_job(job: Job, settings: Settings) -> list[str]:
    from core.analysis.corpus import knowledge_base_names

    return knowledge_base_names(settings)


class SourcePicker(QWidget):
    """Which text the lab learns from: (kind, value) with kind 'preset', 'file' or 'kb'."""

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setMinimumWidth(380)
        for name, label in PRESET_NAMES.items():
            self.combo.addItem(label, ("preset", name))
        self.open_button = QPushButton("Open text file…")
        self.open_button.clicked.connect(self.choose_file)
        row.addWidget(QLabel("Text"))
        row.addWidget(self.combo)
        row.addWidget(self.open_button)
        row.addStretch(1)

    def source(self) -> tuple[str, str]:
        kind, value = self.combo.currentData()
        return str(kind), str(value)

    def select(self, kind: str, value: str) -> bool:
        for i in range(self.combo.count()):
            if tuple(self.combo.itemData(i)) == (kind, value):
                self.combo.setCurrentIndex(i)
                return True
        return False

    def add_file(self, path: str) -> None:
        self.combo.addItem(f"File: {path}", ("file", path))
        self.combo.setCurrentIndex(self.combo.count() - 1)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a text file", "", "Text (*.txt *.md);;All (*)")
        if path:
            self.add_file(path)

    def refresh_knowledge_bases(self) -> None:
        self.ctx.jobs.run(_kb_names_job, self.ctx.settings, group=KBS_GROUP, quiet=True,
                          on_result=self._set_kbs, on_error=lambda _exc: None)

    def _set_kbs(self, names: list[str]) -> None:
        current = self.source()
        for i in reversed(range(self.combo.count())):
            if self.combo.itemData(i)[0] == "kb":
                self.combo.removeItem(i)
        for name in names:
            self.combo.addItem(f"Knowledge base: {name}", ("kb", name))
        if not self.select(*current):
            self.combo.setCurrentIndex(0)


class LabPage(QWidget):
    vectors_trained = Signal(object)  # TrainedVectors: the static model the other tabs compare

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from desktop.pages.lab.models import ClassifierTab, ContextTab
        from desktop.pages.lab.text import CooccurTab, StemTab
        from desktop.pages.lab.words import DimensionsTab, VectorsTab

        self.ctx = ctx
        self.vectors: TrainedVectors | None = None
        outer = QVBoxLayout(self)
        title = QLabel("Lab")
        title.setObjectName("pageTitle")
        outer.addWidget(title)
        self.source = SourcePicker(ctx)
        outer.addWidget(self.source)
        self.tabs = QTabWidget()
        outer.addWidget(self.tabs, 1)
        self.vectors_tab = VectorsTab(self)
        self.cooccur_tab = CooccurTab(self)
        self.dimensions_tab = DimensionsTab(self)
        self.context_tab = ContextTab(self)
        self.stem_tab = StemTab(self)
        self.classifier_tab = ClassifierTab(self)
        for tab, name in ((self.vectors_tab, "Words to vectors"), (self.cooccur_tab, "Co-occurrence"),
                          (self.dimensions_tab, "Dimensions"),
                          (self.context_tab, "Static vs contextual"),
                          (self.stem_tab, "Stemming"), (self.classifier_tab, "Classifier")):
            self.tabs.addTab(tab, name)
        self._kbs_listed = False
        ctx.bus.knowledge_bases_changed.connect(self.source.refresh_knowledge_bases)

    def showEvent(self, event: object) -> None:  # noqa: N802 (Qt's name)
        if not self._kbs_listed:
            self._kbs_listed = True
            self.source.refresh_knowledge_bases()
        super().showEvent(event)  # type: ignore[arg-type]

    def set_vectors(self, tv: TrainedVectors) -> None:
        self.vectors = tv
        self.vectors_trained.emit(tv)
