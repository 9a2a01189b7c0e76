"""The Workshop page: quantize a model, measure what it cost, look at 1-bit weights, merge."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QTabWidget, QVBoxLayout, QWidget

from desktop.context import AppContext
from desktop.pages.workshop.measure_tab import MeasureTab
from desktop.pages.workshop.merge_tab import MergeTab
from desktop.pages.workshop.quantize_tab import QuantizeTab
from desktop.pages.workshop.ternary_tab import TernaryTab


class WorkshopPage(QWidget):
    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        col = QVBoxLayout(self)
        title = QLabel("Workshop")
        title.setObjectName("pageTitle")
        col.addWidget(title)
        self.tabs = QTabWidget()
        self.quantize = QuantizeTab(ctx)
        self.measure = MeasureTab(ctx)
        self.ternary = TernaryTab(ctx)
        self.merge = MergeTab(ctx)
        self.tabs.addTab(self.quantize, "Quantize")
        self.tabs.addTab(self.measure, "Measure")
        self.tabs.addTab(self.ternary, "1-bit")
        self.tabs.addTab(self.merge, "Merge")
        col.addWidget(self.tabs, 1)
        # A new quantized model is ready to compare.
        self.quantize.quantized.connect(self.measure.add_model)
