"""Plots of the Embeddings page: a similarity heatmap and a corpus map (pyqtgraph)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Signal
from PySide6.QtGui import QColor, QCursor
from PySide6.QtWidgets import QLabel, QToolTip, QVBoxLayout, QWidget

from core.analysis.similarity import measure

DOC_COLOURS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#17becf", "#bcbd22", "#393b79", "#ad494a", "#7f7f7f",
]


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class HeatmapView(QWidget):
    """A matrix as coloured cells; hovering a cell shows the pair and its value."""

    def __init__(self, title: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        # A PlotWidget, not a GraphicsLayoutWidget: grabbing the latter crashes PySide6 6.12.
        self.graphics = pg.PlotWidget(background="w")
        self.plot = self.graphics.getPlotItem()
        if title:
            self.plot.setTitle(title)
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.image = pg.ImageItem()
        self.plot.addItem(self.image)
        self.bar: pg.ColorBarItem | None = None
        self.hover = QLabel(" ")
        self.hover.setWordWrap(True)
        col.addWidget(self.graphics, 1)
        col.addWidget(self.hover)
        self.matrix: np.ndarray | None = None
        self.labels: list[str] = []
        self.measure_name = "cosine"  # not 'metric': that would override QWidget.metric()
        self._texts: list[pg.TextItem] = []
        self.graphics.scene().sigMouseMoved.connect(self._moved)

    def set_title(self, title: str) -> None:
        self.plot.setTitle(title)

    def set_matrix(self, matrix: np.ndarray, labels: Sequence[str], metric: str) -> None:
        self.matrix = np.asarray(matrix, dtype=np.float64)
        self.labels = list(labels)
        self.measure_name = metric
        m = measure(metric)
        n = self.matrix.shape[0]
        cmap = pg.colormap.get("viridis")
        if not m.higher_is_closer:
            cmap.reverse()  # closer is always brighter
        lo, hi = (min(0.0, float(self.matrix.min())), 1.0) if m.higher_is_closer else (
            0.0, float(self.matrix.max()) or 1.0)
        self.image.setImage(self.matrix.T, levels=(lo, hi))  # image[x=col, y=row]
        self.image.setColorMap(cmap)
        if self.bar is None:
            self.bar = pg.ColorBarItem(values=(lo, hi), colorMap=cmap, interactive=False,
                                       label=m.label)
            self.bar.setImageItem(self.image, insert_in=self.plot)
        else:
            self.bar.setColorMap(cmap)
            self.bar.setLevels((lo, hi))
        ticks = [[(i + 0.5, str(i + 1)) for i in range(n)]]
        self.plot.getAxis("left").setTicks(ticks)
        self.plot.getAxis("bottom").setTicks(ticks)
        for t in self._texts:
            self.plot.removeItem(t)
        self._texts = []
        if n <= 12:
            for r in range(n):
                for c in range(n):
                    v = self.matrix[r, c]
                    level = (v - lo) / (hi - lo or 1.0)
                    bright = level > 0.6 if m.higher_is_closer else level < 0.4
                    t = pg.TextItem(f"{v:.2f}", color="k" if bright else "w", anchor=(0.5, 0.5))
                    t.setPos(c + 0.5, r + 0.5)
                    self.plot.addItem(t)
                    self._texts.append(t)
        self.plot.setRange(xRange=(0, n), yRange=(0, n), padding=0.02)
        self.hover.setText("Hover a cell to see the pair and its value.")

    def cell_text(self, row: int, col: int) -> str:
        assert self.matrix is not None
        v = self.matrix[row, col]
        a, b = self.labels[row], self.labels[col]
        return (f"{row + 1} ↔ {col + 1}: {measure(self.measure_name).label.lower()} {v:.4f}"
                f"  —  “{_short(a)}” / “{_short(b)}”")

    def _moved(self, pos: QPointF) -> None:
        if self.matrix is None:
            return
        p = self.plot.vb.mapSceneToView(pos)
        col, row = int(np.floor(p.x())), int(np.floor(p.y()))
        n = self.matrix.shape[0]
        if 0 <= row < n and 0 <= col < n:
            text = self.cell_text(row, col)
            self.hover.setText(text)
            QToolTip.showText(QCursor.pos(), text, self)


class CorpusMapView(QWidget):
    """Chunks as points coloured by document; a query with its neighbours highlighted."""

    chunk_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        self.plot_widget = pg.PlotWidget(background="w")
        self.plot = self.plot_widget.getPlotItem()
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.legend = self.plot.addLegend(
            offset=(10, 10), labelTextSize="8pt", brush=pg.mkBrush(255, 255, 255, 210),
            pen=pg.mkPen("#cfd8dc"))
        self.hover = QLabel(" ")
        self.hover.setWordWrap(True)
        col.addWidget(self.plot_widget, 1)
        col.addWidget(self.hover)
        self.coords: np.ndarray | None = None
        self.texts: list[str] = []
        self.names: list[str] = []
        self._scatters: list[pg.ScatterPlotItem] = []
        self._tree: object | None = None
        self._scale = np.ones(2)
        self.query_item = pg.ScatterPlotItem(symbol="star", size=22, pen=pg.mkPen("k", width=1.5),
                                             brush=pg.mkBrush("#ffeb3b"))
        self.neigh_item = pg.ScatterPlotItem(symbol="o", size=14, pen=pg.mkPen("#d50000", width=2),
                                             brush=None)
        self.lines = pg.PlotDataItem(pen=pg.mkPen("#d50000", width=1, style=pg.QtCore.Qt.PenStyle.DashLine),
                                     connect="pairs")
        for item in (self.lines, self.neigh_item, self.query_item):
            item.setZValue(10)
            self.plot.addItem(item)
        scene = self.plot_widget.scene()
        scene.sigMouseMoved.connect(self._moved)
        scene.sigMouseClicked.connect(self._clicked)

    def set_points(self, coords: np.ndarray, groups: np.ndarray, legend: Sequence[str],
                   texts: Sequence[str], names: Sequence[str]) -> None:
        """Draw the map: one scatter item per document colour (fast with 100,000 points)."""
        for s in self._scatters:
            self.plot.removeItem(s)
        self._scatters = []
        self.legend.clear()
        self.coords = np.asarray(coords, dtype=np.float32)
        self.texts = list(texts)
        self.names = list(names)
        many = len(coords) > 20000
        for g, label in enumerate(legend):
            mask = groups == g
            if not mask.any():
                continue
            colour = QColor(DOC_COLOURS[g % len(DOC_COLOURS)])
            colour.setAlpha(140 if many else 200)
            item = pg.ScatterPlotItem(
                pos=self.coords[mask], size=3 if many else 7, pen=None,
                brush=pg.mkBrush(colour), pxMode=True, name=label,
            )
            self.plot.addItem(item)
            self._scatters.append(item)
        self.clear_query()
        from scipy.spatial import cKDTree

        span = self.coords.max(axis=0) - self.coords.min(axis=0) if len(self.coords) else np.ones(2)
        self._scale = np.where(span > 0, span, 1.0)
        self._tree = cKDTree(self.coords / self._scale) if len(self.coords) else None
        self.plot.autoRange()
        vb = self.plot.vb
        (x0, x1), (y0, y1) = vb.viewRange()
        vb.setXRange(x0 - 0.35 * (x1 - x0), x1, padding=0)  # room for the legend at the left
        self.hover.setText("Hover a point to read its chunk; click to open it.")

    def clear_query(self) -> None:
        self.query_item.setData([], [])
        self.neigh_item.setData([], [])
        self.lines.setData([], [])

    def show_query(self, at: np.ndarray, neighbours: Sequence[int]) -> None:
        assert self.coords is not None
        q = np.asarray(at, dtype=np.float32).reshape(2)
        pts = self.coords[list(neighbours)]
        self.query_item.setData([q[0]], [q[1]])
        self.neigh_item.setData(pts[:, 0], pts[:, 1])
        xs = np.empty(2 * len(pts))
        ys = np.empty(2 * len(pts))
        xs[0::2], ys[0::2] = q[0], q[1]
        xs[1::2], ys[1::2] = pts[:, 0], pts[:, 1]
        self.lines.setData(xs, ys)

    def point_at(self, scene_pos: QPointF, max_px: float = 8.0) -> int | None:
        if self.coords is None or self._tree is None:
            return None
        vb = self.plot.vb
        p = vb.mapSceneToView(scene_pos)
        here = np.array([p.x(), p.y()])
        k = min(8, len(self.coords))
        _, idx = self._tree.query(here / self._scale, k=k)  # type: ignore[attr-defined]
        idx = np.atleast_1d(idx)
        px = np.array(vb.viewPixelSize())
        d = np.linalg.norm((self.coords[idx] - here) / np.where(px > 0, px, 1.0), axis=1)
        best = int(np.argmin(d))
        return int(idx[best]) if d[best] <= max_px else None

    def describe(self, i: int) -> str:
        return f"{self.names[i]}: {_short(self.texts[i], 300)}"

    def _moved(self, pos: QPointF) -> None:
        i = self.point_at(pos)
        if i is None:
            return
        text = self.describe(i)
        self.hover.setText(text)
        QToolTip.showText(QCursor.pos(), text, self)

    def _clicked(self, event: object) -> None:
        i = self.point_at(event.scenePos())  # type: ignore[attr-defined]
        if i is not None:
            self.chunk_clicked.emit(i)
