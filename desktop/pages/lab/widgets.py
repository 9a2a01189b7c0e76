"""Widgets of the Lab page: the LabTab base (a column, run bars, jobs), a run bar (start, stop,
progress), a word map, a heatmap, a line plot and a table filler (pyqtgraph and Qt widgets, no
core work)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.jobs import Worker

if TYPE_CHECKING:
    from desktop.pages.lab.page import LabPage

R = TypeVar("R")


class RunBar(QWidget):
    """[Start] [Stop] progress bar and a status line; Stop is live only while a run is."""

    start = Signal()
    stop = Signal()

    def __init__(self, label: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.start_button = QPushButton(label)
        self.start_button.setObjectName("primary")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setMaximumWidth(220)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        for w in (self.start_button, self.stop_button, self.progress):
            row.addWidget(w)
        row.addWidget(self.status, 1)
        self.start_button.clicked.connect(self.start.emit)
        self.stop_button.clicked.connect(self.stop.emit)

    def running(self, text: str) -> None:
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.status.setText(text)

    def report(self, fraction: float | None, text: str) -> None:
        if fraction is None or fraction < 0:
            self.progress.setRange(0, 0)  # busy, length unknown
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * min(fraction, 1.0)))
        if text:
            self.status.setText(text)

    def finished(self, text: str) -> None:
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.progress.setRange(0, 1000)
        self.progress.setValue(1000)
        self.status.setText(text)

    def idle(self, text: str) -> None:
        self.finished(text)
        self.progress.setValue(0)


class LabTab(QWidget):
    """A Lab tab: its page (the text picked, the vectors trained), the app context, and a column
    to lay its rows out in."""

    def __init__(self, page: LabPage) -> None:
        super().__init__()
        self.page = page
        self.ctx = page.ctx
        self.col = QVBoxLayout(self)

    def add_run_bar(self, label: str, start: Callable[[], object], group: str,
                    hint: str = "") -> RunBar:
        """A RunBar in the column: [label] runs ``start``, Stop cancels ``group``."""
        bar = RunBar(label)
        if hint:
            bar.status.setText(hint)
        bar.start.connect(start)
        bar.stop.connect(lambda: self.ctx.jobs.cancel(group))
        self.col.addWidget(bar)
        return bar

    def run_job(self, bar: RunBar, text: str, fn: Callable[..., R], *args: Any, group: str,
                on_result: Callable[[R], object], stopped: str = "Stopped.",
                on_cancelled: Callable[[Any], object] | None = None) -> Worker[R]:
        """``bar`` says ``text`` and shows ``fn(job, *args)`` running in ``group``; an error, or
        Stop (unless ``on_cancelled`` handles it), leaves the bar idle with a sentence."""
        bar.running(text)
        return self.ctx.jobs.run(
            fn, *args, group=group, on_progress=bar.report, on_result=on_result,
            on_error=lambda exc: bar.idle(self.ctx.show_error(exc)),
            on_cancelled=on_cancelled or (lambda _p: bar.idle(stopped)))


def labelled_row(pairs: Sequence[tuple[str, QWidget]], *,
                 lead: Sequence[QWidget] = ()) -> QHBoxLayout:
    """A row: the ``lead`` widgets, then a label before each widget, then stretch."""
    row = QHBoxLayout()
    for widget in lead:
        row.addWidget(widget)
    for label, widget in pairs:
        row.addWidget(QLabel(label))
        row.addWidget(widget)
    row.addStretch(1)
    return row


def spin_box(low: int, high: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    return box


class _Plot(pg.PlotWidget):  # type: ignore[misc]
    """A plot on white without pyqtgraph's buttons and menu. (A PlotWidget, not a
    GraphicsLayoutWidget: grabbing the latter crashes PySide6 6.12.)"""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background="w")
        item = self.getPlotItem()
        item.hideButtons()
        item.setMenuEnabled(False)


class WordMap(_Plot):
    """Words as labelled points on a plane (a 2-D projection of their vectors)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.getPlotItem().showGrid(x=True, y=True, alpha=0.15)
        self.scatter = pg.ScatterPlotItem(size=7, pen=None, brush=pg.mkBrush(31, 119, 180, 200))
        self.addItem(self.scatter)
        self.labels: list[pg.TextItem] = []
        self.words: list[str] = []

    def set_words(self, words: Sequence[str], coords: np.ndarray) -> None:
        """Draw the words (the first 150 labelled: the map stays readable)."""
        for t in self.labels:
            self.removeItem(t)
        self.labels = []
        self.words = list(words)
        self.scatter.setData(pos=coords)
        for w, (x, y) in zip(words[:150], coords[:150], strict=False):
            t = pg.TextItem(w, color="#263238", anchor=(0, 1))
            t.setPos(float(x), float(y))
            self.addItem(t)
            self.labels.append(t)
        self.highlight([])
        self.autoRange()

    def highlight(self, marked_words: Sequence[str]) -> None:
        """Colour these words red (a word and its nearest neighbours)."""
        marked = set(marked_words)
        self.scatter.setBrush([pg.mkBrush("#d62728") if w in marked else pg.mkBrush(31, 119, 180, 200)
                               for w in self.words])
        for w, t in zip(self.words, self.labels, strict=False):
            t.setColor("#d62728" if w in marked else "#263238")


class Heatmap(_Plot):
    """A matrix as coloured cells with row and column words on the axes."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        item = self.getPlotItem()
        item.setAspectLocked(True)
        item.invertY(True)
        self.image = pg.ImageItem()
        self.addItem(self.image)
        self.image.setColorMap(pg.colormap.get("viridis"))

    def set_matrix(self, matrix: np.ndarray, labels: Sequence[str]) -> None:
        m = np.asarray(matrix, dtype=np.float64)
        self.image.setImage(m.T, levels=(0.0, float(m.max()) or 1.0))  # image[x=col, y=row]
        ticks = [[(i + 0.5, w) for i, w in enumerate(labels)]]
        left = self.getPlotItem().getAxis("left")
        left.setWidth(8 + 7 * max((len(w) for w in labels), default=1))  # room for every word
        left.setTicks(ticks)
        self.getPlotItem().getAxis("bottom").setTicks(ticks)
        self.getPlotItem().setRange(xRange=(0, len(labels)), yRange=(0, len(labels)), padding=0.02)


class LinePlot(_Plot):
    """One or two series against x, e.g. loss per epoch, or quality and time per dimension."""

    def __init__(self, x_label: str, y_label: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        item = self.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.2)
        item.setLabel("bottom", x_label)
        item.setLabel("left", y_label)
        self.legend = item.addLegend(offset=(10, 10))

    def set_series(self, series: Sequence[tuple[str, Sequence[float], Sequence[float], str]]) -> None:
        self.clear()
        self.legend.clear()
        for name, xs, ys, colour in series:
            self.plot(list(xs), list(ys), pen=pg.mkPen(colour, width=2), symbol="o",
                      symbolSize=6, symbolBrush=colour, name=name)


def fill_table(table: QTableWidget, headers: Sequence[str], rows: Sequence[Sequence[object]],
               *, shade: bool = False, row_headers: Sequence[str] | None = None) -> None:
    """Put ``rows`` in ``table``; numbers right-aligned (3 decimals); ``shade`` colours numbers
    from white (0) to blue (the largest)."""
    table.clear()
    table.setColumnCount(len(headers))
    table.setRowCount(len(rows))
    table.setHorizontalHeaderLabels(list(headers))
    if row_headers is not None:
        table.setVerticalHeaderLabels(list(row_headers))
    numbers = [float(v) for r in rows for v in r if isinstance(v, (int, float))]
    top = max(numbers) if numbers else 1.0
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, float):
                text = f"{value:.3f}"
            else:
                text = str(value)
            item = QTableWidgetItem(text)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            if isinstance(value, (int, float)):
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if shade and top > 0:
                    level = max(0.0, float(value)) / top
                    item.setBackground(QColor.fromRgbF(1 - 0.6 * level, 1 - 0.4 * level, 1.0))
            table.setItem(r, c, item)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
