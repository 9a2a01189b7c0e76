"""The Workshop page's 1-bit tab: a tensor's weight histogram and its BitNet b1.58 absmean
ternary version, the whole model ternarised and measured, and for TQ1_0/TQ2_0 files the
share of weights actually stored ternary."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTextBrowser,
    QWidget,
)

from core.config import Settings
from desktop.context import AppContext
from desktop.jobs import Job, Worker
from desktop.pages.workshop.common import (
    JobTab,
    ModelPicker,
    job_progress,
    primary_button,
    text_file_field,
)

GROUP = "workshop-ternary"
INTRO = ("BitNet b1.58 keeps every weight in {-1, 0, 1}: scale a tensor by its mean absolute "
         "weight, round, clip to [-1, 1]. Pick a tensor to see what that does to its weights, "
         "or ternarise the whole model (written as F16, so block sizes do not matter) and "
         "measure its perplexity before and after.")


def _tensors_job(job: Job, ref: str, settings: Settings) -> tuple[str, list[str], object]:
    from core.workshop.quantize import resolve_source
    from core.workshop.ternary import matrix_names, ternary_share

    path = resolve_source(ref, settings)
    return str(path), matrix_names(path), ternary_share(path)


def _view_job(job: Job, path: str, name: str) -> object:
    from core.workshop.ternary import tensor_view

    return tensor_view(Path(path), name)


def _ternarise_job(job: Job, path: str, text_file: str, settings: Settings) -> object:
    from core.workshop.measure import evaluate_models, text_from_file
    from core.workshop.ternary import ternarise_model

    text = text_from_file(Path(text_file))
    report = job_progress(job)
    out = ternarise_model(Path(path), progress=lambda f, t: report(0.5 * f, t))
    return evaluate_models([path, str(out)], text, text_source=text_file, n_ctx=256,
                           max_tokens=1024, gen_tokens=0, settings=settings,
                           progress=lambda f, t: report(0.5 + 0.5 * f, t))


class TernaryTab(JobTab):
    GROUP = GROUP
    STOPPED = "Stopped. Nothing was left in the library."
    viewed = Signal()
    measured = Signal()

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, INTRO, parent)
        self.path = ""
        self.view: object = None
        col = self.col
        row = QHBoxLayout()
        self.picker = ModelPicker()
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(self.open_model)
        self.tensor_box = QComboBox()
        self.tensor_box.setMinimumWidth(220)
        self.tensor_box.currentIndexChanged.connect(self._tensor_chosen)
        row.addWidget(QLabel("Model"))
        row.addWidget(self.picker, 1)
        for w in (self.open_button, QLabel("Tensor"), self.tensor_box):
            row.addWidget(w)
        col.addLayout(row)
        self.share = QLabel("")
        self.share.setWordWrap(True)
        col.addWidget(self.share)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setLabel("bottom", "weight")
        self.plot.setLabel("left", "count")
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        col.addWidget(self.plot, 1)
        self.stats = QLabel("")
        self.stats.setWordWrap(True)
        col.addWidget(self.stats)
        row = QHBoxLayout()
        self.text_path, browse = text_file_field(self, "a text file to measure perplexity on")
        self.run_button = primary_button("Ternarise the whole model and measure", self.ternarise)
        self.ternarise_button = self.run_button
        row.addWidget(QLabel("Text"))
        row.addWidget(self.text_path, 1)
        row.addWidget(browse)
        row.addWidget(self.ternarise_button)
        col.addLayout(row)
        col.addWidget(self.progress)
        self.result = QTextBrowser()
        self.result.setMaximumHeight(130)
        col.addWidget(self.result)
        ctx.bus.models_changed.connect(self.picker.refresh)

    def open_model(self) -> Worker[object] | None:
        ref = self.picker.text()
        if not ref:
            self.progress.finished("Choose a model first.")
            return None
        self.progress.started(f"Reading {ref}…")
        return self.ctx.jobs.run(_tensors_job, ref, self.ctx.settings, group=GROUP,
                                 on_result=self._opened, on_error=self._failed,
                                 on_cancelled=lambda _p: self.progress.finished("Stopped."))

    def _opened(self, result: object) -> None:
        from core.workshop.ternary import TernaryShare

        assert isinstance(result, tuple)
        path, names, share = result
        assert isinstance(share, TernaryShare)
        self.path = path
        self.progress.finished(f"{Path(path).name}: {len(names)} weight matrices.")
        if share.ternary_weights:
            rest = ", ".join(f"{k} {v / share.total_weights:.1%}"
                             for k, v in sorted(share.by_type.items(), key=lambda kv: -kv[1])
                             if k not in ("TQ1_0", "TQ2_0"))
            self.share.setText(
                f"This file stores {share.share:.1%} of its weights ternary (TQ1_0/TQ2_0). "
                f"The rest: {rest}. Rows whose width is not a multiple of 256 do not fit "
                "the ternary blocks and fall back (SmolLM2's 576-wide rows go to Q4_0).")
        else:
            self.share.setText("")
        self.tensor_box.blockSignals(True)
        self.tensor_box.clear()
        self.tensor_box.addItems(names)
        self.tensor_box.blockSignals(False)
        if names:
            self.tensor_box.setCurrentIndex(0)
            self._tensor_chosen(0)

    def _tensor_chosen(self, _index: int) -> Worker[object] | None:
        name = self.tensor_box.currentText()
        if not self.path or not name:
            return None
        self.progress.started(f"Reading {name}…")
        return self.ctx.jobs.run(_view_job, self.path, name, group=GROUP,
                                 on_result=self.show_view, on_error=self._failed,
                                 on_cancelled=lambda _p: self.progress.finished("Stopped."))

    def show_view(self, view: object) -> None:
        from core.workshop.ternary import TensorView

        assert isinstance(view, TensorView)
        self.view = view
        self.plot.clear()
        edges = np.asarray(view.edges)
        centers = (edges[:-1] + edges[1:]) / 2
        width = float(edges[1] - edges[0]) if len(edges) > 1 else 1.0
        self.plot.addItem(pg.BarGraphItem(x=centers, height=view.counts, width=width,
                                          brush="#1f77b4", pen=None))
        for x, colour in ((-view.scale / 2, "#d62728"), (view.scale / 2, "#d62728"),
                          (-view.scale, "#2ca02c"), (view.scale, "#2ca02c")):
            self.plot.addItem(pg.InfiniteLine(pos=x, angle=90,
                                              pen=pg.mkPen(colour, style=pg.QtCore.Qt.PenStyle.DashLine)))
        s = view.ternary_shares
        self.plot.setTitle(f"{view.name} {view.shape}")
        self.stats.setText(
            f"Scale (mean |w|) {view.scale:.4g}: weights between the red lines become 0, the "
            f"others ±scale (green). After ternarising: -1 {s['-1']:.1%}, 0 {s['0']:.1%}, "
            f"+1 {s['1']:.1%}. Reconstruction error ||W − scale·T|| / ||W|| = "
            f"{view.relative_error:.1%} (RMSE {view.rmse:.3g}).")
        self.progress.finished(f"{view.name}: {np.prod(view.shape):,} weights.")
        self.viewed.emit()

    def ternarise(self) -> Worker[object] | None:
        if not self.path:
            self.progress.finished("Open a model first.")
            return None
        text = self.text_path.text().strip()
        if not text:
            self.progress.finished("Choose a text file to measure perplexity on.")
            return None
        return self.run_job("Ternarising every weight matrix…", _ternarise_job, self.path, text,
                            self.ctx.settings, on_result=self._ternarised)

    def _ternarised(self, evaluation: object) -> None:
        from core.workshop.measure import Evaluation
        from core.workshop.ternary import WHY_IT_FAILS

        assert isinstance(evaluation, Evaluation)
        before, after = evaluation.variants[0], evaluation.variants[1]
        self.ended(f"Ternarised copy: {after.name}.")
        self.result.setHtml(
            f"<p><b>Perplexity before: {before.perplexity:.2f}, after ternarising: "
            f"{after.perplexity:.4g}</b> (top-1 agreement {after.top1_agreement or 0:.1%}, "
            f"{evaluation.tokens} tokens).</p><p>{html.escape(WHY_IT_FAILS)}</p>")
        self.ctx.bus.models_changed.emit()
        self.measured.emit()
