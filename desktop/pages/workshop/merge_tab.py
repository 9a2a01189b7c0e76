"""The Workshop page's Merge tab: pick models and a method, merge them into a new GGUF in the
library, with progress and Stop (the merge itself is core.workshop.merge, in a worker)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from core.config import Settings
from core.errors import CorralError
from desktop.context import AppContext
from desktop.jobs import Job, Worker
from desktop.pages.workshop.common import JobTab, ModelPicker, save_as_row

GROUP = "workshop-merge"
METHODS = {
    "linear": "Linear: a weighted average (t is the second model's weight)",
    "slerp": "SLERP: along the arc between two models (t per layer: 0,0.5,1)",
    "ties": "TIES: trim each task vector, elect a sign per weight, average the agreeing",
    "dare": "DARE: drop task-vector weights at random, rescale the rest",
    "passthrough": "Pass-through: stack layer ranges into a deeper model",
    "moe": "MoE: 2 to 4 models as experts behind a router made from their prompts",
}
INTRO = (
    "Merging combines models of the same architecture and vocabulary, such as fine-tunes of "
    "one base model, without training. Tensors stream one at a time: dequantized, merged in "
    "float32, written as F16, BF16 or F32, so memory stays near two tensors. The result keeps "
    "the first model's tokenizer and chat template, records its parents and parameters, "
    "lands in the library, and can go straight to Quantize.")
#: the parameter rows each method uses
ROWS = {"t": {"linear", "slerp"}, "base": {"ties", "dare", "moe"}, "density": {"ties"},
        "drop": {"dare"}, "seed": {"dare"}, "layers": {"passthrough"}, "experts": {"moe"}}


def _merge_job(job: Job, spec: Any, out: Path | None, settings: Settings) -> object:
    from core.units import human_size
    from core.workshop.merge import merge

    def progress(done: int, total: int) -> None:
        job.progress(done / total if total else None,
                     f"Merging: {human_size(done)} of {human_size(total)} written")

    return merge(spec, out, settings=settings, progress=progress, cancel=job)


class MergeTab(JobTab):
    """Merge GGUF models (linear, SLERP, TIES, DARE, pass-through, MoE)."""

    GROUP = GROUP
    STOPPED = "Stopped. Nothing was written: the partial file was deleted."
    merged = Signal(str)  # the new model's path

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, INTRO, parent)
        self.form = form = QFormLayout()
        self.method = QComboBox()
        for key, text in METHODS.items():
            self.method.addItem(text, key)
        self.method.setCurrentIndex(list(METHODS).index("slerp"))
        self.method.currentIndexChanged.connect(self._method_changed)
        form.addRow("Method", self.method)
        pick_row = QHBoxLayout()
        self.picker = ModelPicker()
        self.add_button = QPushButton("Add")
        self.add_button.clicked.connect(self.add_model)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self._remove_model)
        pick_row.addWidget(self.picker, 1)
        pick_row.addWidget(self.add_button)
        pick_row.addWidget(self.remove_button)
        form.addRow("Add a model", pick_row)
        self.models = QListWidget()
        self.models.setMaximumHeight(90)
        form.addRow("Models, in order", self.models)
        self.base = ModelPicker()
        base_edit = self.base.combo.lineEdit()
        if base_edit is not None:
            base_edit.setPlaceholderText("TIES/DARE: the model the others were tuned from; "
                                         "MoE: the first model if empty")
        form.addRow("Base model", self.base)
        self.t = QLineEdit("0.5")
        self.t.setPlaceholderText("0.5, or a gradient over the layers: 0,0.5,1")
        form.addRow("t", self.t)
        self.density = self._spin(0.5, 0.01, 1.0)
        form.addRow("Density (kept)", self.density)
        self.drop = self._spin(0.5, 0.0, 0.99)
        form.addRow("Drop rate", self.drop)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        form.addRow("Seed", self.seed)
        self.layers = QLineEdit()
        self.layers.setPlaceholderText("MODEL:START-END, models from 1, END excluded: "
                                       "1:0-24,2:8-24")
        form.addRow("Layers", self.layers)
        self.experts = QPlainTextEdit()
        self.experts.setPlaceholderText("One line per model, in order: the prompts that should "
                                        "go to that expert, separated by ' | '")
        self.experts.setMaximumHeight(70)
        form.addRow("Expert prompts", self.experts)
        self.dtype = QComboBox()
        self.dtype.addItems(["f16", "bf16", "f32"])
        out_row, self.out = save_as_row(self, "Save the merged model as", self.dtype)
        form.addRow("Save as", out_row)
        self.col.addLayout(form)
        self.add_run_row("Merge", self.start,
                         "The merged model, its parents and layers appear here.")
        ctx.bus.models_changed.connect(self.picker.refresh)
        ctx.bus.models_changed.connect(self.base.refresh)
        self._method_changed()

    @staticmethod
    def _spin(value: float, low: float, high: float) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(low, high)
        box.setSingleStep(0.05)
        box.setDecimals(2)
        box.setValue(value)
        return box

    def _method_changed(self) -> None:
        method = str(self.method.currentData())
        rows = {"t": self.t, "base": self.base, "density": self.density, "drop": self.drop,
                "seed": self.seed, "layers": self.layers, "experts": self.experts}
        for key, widget in rows.items():
            self.form.setRowVisible(widget, method in ROWS[key])

    def add_model(self, ref: str | None = None) -> None:
        text = (ref if isinstance(ref, str) else None) or self.picker.text()
        if text:
            self.models.addItem(text)

    def _remove_model(self) -> None:
        row = self.models.currentRow()
        self.models.takeItem(row if row >= 0 else self.models.count() - 1)

    def model_refs(self) -> list[str]:
        return [self.models.item(i).text() for i in range(self.models.count())]

    def build_spec(self) -> Any:
        """The MergeSpec the form describes (MergeRefused when it does not add up)."""
        from core.workshop.merge_plan import (
            Expert,
            MergeSpec,
            parse_layers,
            parse_t,
        )

        method = str(self.method.currentData())
        refs = self.model_refs()
        base = self.base.text() if method in ROWS["base"] else ""
        spec = MergeSpec(method, refs, base=base or None, dtype=self.dtype.currentText())
        if method in ROWS["t"]:
            spec.t = parse_t(self.t.text() or "0.5")
        if method == "ties":
            spec.density, spec.consensus = self.density.value(), True
        if method == "dare":
            spec.drop, spec.seed = self.drop.value(), self.seed.value()
        if method == "passthrough":
            spec.slices = parse_layers(self.layers.text())
        if method == "moe":
            spec.base = spec.base or (refs[0] if refs else None)
            lines = [ln for ln in self.experts.toPlainText().splitlines() if ln.strip()]
            spec.experts = [Expert(tuple(p.strip() for p in ln.split("|") if p.strip()))
                            for ln in lines]
        spec.check()
        return spec

    def start(self) -> Worker[object] | None:
        try:
            spec = self.build_spec()
        except CorralError as exc:
            self.progress.finished(exc.sentence())
            self.result.setHtml(f"<p><b>Not merged.</b> {html.escape(exc.sentence())}</p>")
            return None
        out = self.out.text().strip()
        self.result.clear()
        return self.run_job(
            f"Merging {len(spec.models)} models with {spec.method}…", _merge_job, spec,
            Path(out).expanduser() if out else None, self.ctx.settings, on_result=self._done)

    def _failed(self, exc: BaseException) -> str:
        sentence = super()._failed(exc)
        self.result.setHtml(f"<p><b>Not merged.</b> {html.escape(sentence)} Nothing was "
                            "written.</p>")
        return sentence

    def _done(self, result: object) -> None:
        from core.workshop.merge import MergeResult

        assert isinstance(result, MergeResult)
        self.ended(f"Wrote {result.path.name} in {result.seconds:.1f} s.")
        self.result.setHtml(describe(result))
        self.ctx.bus.models_changed.emit()
        self.merged.emit(str(result.path))


def describe(result: object) -> str:
    """The result as HTML: where it went, from what, how big, and what it kept."""
    from core.units import human_size
    from core.workshop.merge import MergeResult

    assert isinstance(result, MergeResult)
    e = html.escape
    experts = f", {result.experts} experts" if result.experts else ""
    notes = "".join(f"<li>{e(n)}</li>" for n in result.notes)
    return (f"<p><b>{e(result.path.name)}</b>: {e(result.method)} of "
            f"{e(' + '.join(result.parents))}, in the library.<br>{e(str(result.path))}</p>"
            f"<p>{result.tensors} tensors, {result.blocks} layers{experts}, "
            f"{human_size(result.bytes)}.</p><ul>{notes}<li>Parents, method and parameters "
            "are recorded in its metadata (corral.merge.*). It can go straight to "
            "Quantize.</li></ul>")
