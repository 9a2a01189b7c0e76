"""The Workshop page's Quantize tab: llama.cpp's quantizer on a chosen model, in a child
process, with progress, Stop, and what fell back."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QWidget

from core.config import Settings
from desktop.context import AppContext
from desktop.jobs import Job, Worker
from desktop.pages.workshop.common import JobTab, ModelPicker, job_progress, save_as_row

GROUP = "workshop-quantize"
TYPE_HELP = {
    "F16": "16 bits, the full-precision copy", "BF16": "16 bits, bfloat",
    "Q8_0": "8.5 bits, near lossless", "Q6_K": "6.6 bits", "Q5_K_M": "5.7 bits",
    "Q4_K_M": "4.9 bits, the usual choice", "Q4_0": "4.5 bits", "Q3_K_M": "3.9 bits",
    "Q2_K": "3.4 bits, much worse", "TQ2_0": "2.06 bits, ternary", "TQ1_0": "1.69 bits, ternary",
}
INTRO = (
    "Quantizing stores weights with fewer bits: smaller and faster, a little less accurate. "
    "llama.cpp's own quantizer runs in a separate process. A model that is already quantized "
    "goes through an F16 copy first, because llama.cpp quantizes only full-precision weights "
    "(what the first quantization lost stays lost). Tensors whose rows do not fit a type's "
    "blocks fall back to another type, as llama.cpp decides; the result lists them.")


def _quantize_job(job: Job, src: str, type_name: str, out: str,
                  settings: Settings) -> object:
    from core.workshop.quantize import quantize

    return quantize(src, type_name, Path(out).expanduser() if out else None,
                    progress=job_progress(job), settings=settings)


class QuantizeTab(JobTab):
    GROUP = GROUP
    STOPPED = "Stopped. Nothing was written: the partial file was deleted."
    quantized = Signal(str)  # the new model's path

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        from core.workshop.quantize import TYPES

        super().__init__(ctx, INTRO, parent)
        form = QFormLayout()
        self.source = ModelPicker()
        form.addRow("Model", self.source)
        self.type_box = QComboBox()
        for name in TYPES:
            self.type_box.addItem(f"{name}  ({TYPE_HELP[name]})", name)
        self.type_box.setCurrentIndex(list(TYPES).index("Q4_K_M"))
        form.addRow("Type", self.type_box)
        out_row, self.out = save_as_row(self, "Save the quantized model as")
        form.addRow("Save as", out_row)
        self.col.addLayout(form)
        self.add_run_row("Quantize", self.start,
                         "The new model, its size and what fell back appear here.")
        ctx.bus.models_changed.connect(self.source.refresh)

    def start(self) -> Worker[object] | None:
        src = self.source.text()
        if not src:
            self.progress.finished("Choose a model to quantize first.")
            return None
        type_name = str(self.type_box.currentData())
        self.result.clear()
        return self.run_job(
            f"Quantizing {src} to {type_name}…", _quantize_job, src, type_name,
            self.out.text().strip(), self.ctx.settings, on_result=self._done)

    def _failed(self, exc: BaseException) -> str:
        sentence = super()._failed(exc)
        self.result.setHtml(f"<p><b>Not quantized.</b> {html.escape(sentence)}</p>")
        return sentence

    def _done(self, result: object) -> None:
        from core.workshop.quantize import QuantizeResult

        assert isinstance(result, QuantizeResult)
        self.ended(f"Wrote {Path(result.path).name} in {result.seconds:.1f} s.")
        self.result.setHtml(describe(result))
        self.ctx.bus.models_changed.emit()
        self.quantized.emit(result.path)


def describe(result: object) -> str:
    """The result as HTML: where it went, why through F16, what fell back, types stored."""
    from core.workshop.quantize import QuantizeResult

    assert isinstance(result, QuantizeResult)
    e = html.escape
    parts = [f"<p><b>{e(Path(result.path).name)}</b>: {result.type}, "
             f"{result.size / 2**20:.1f} MiB, in the library.<br>{e(result.path)}</p>",
             f"<p>Source: {e(Path(result.source).name)} ({e(result.source_type)}), "
             f"SHA-256 {result.source_sha256[:16]}…</p>"]
    if result.via_f16:
        parts.append(f"<p><i>Through F16:</i> {e(result.note)}</p>")
    total = sum(result.tensor_types.values()) or 1
    shares = ", ".join(f"{k} {v / total:.1%}" for k, v in
                       sorted(result.tensor_types.items(), key=lambda kv: -kv[1]))
    parts.append(f"<p>Weights stored as: {e(shares)}</p>")
    if result.fallbacks:
        used = ", ".join(sorted({f.used for f in result.fallbacks}))
        items = "".join(f"<li>{e(f.tensor)}: {e(f.used)} ({e(f.reason)})</li>"
                        for f in result.fallbacks[:12])
        more = (f"<li>… and {len(result.fallbacks) - 12} more</li>"
                if len(result.fallbacks) > 12 else "")
        parts.append(f"<p>{len(result.fallbacks)} tensors did not fit {result.type}'s blocks "
                     f"and fell back to {e(used)}, as llama.cpp decided:</p><ul>{items}{more}</ul>")
    return "".join(parts)
