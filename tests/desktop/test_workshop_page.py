"""The Workshop page driven like a user would: quantize (and its faults: damaged file,
unreadable tensor type, no free space, Stop mid-write), measure, the 1-bit view."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from core.workshop.output import models_dir
from tools.tiny_gguf import make_tiny_gguf

SHOTS = Path(os.environ.get("CORRAL_SHOTS", "/tmp/corral-shots"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engines():
    yield
    from core.models.pool import close_all

    close_all()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gguf(tmp_path_factory.mktemp("ws") / "tiny.gguf", n_ctx=512)


@pytest.fixture
def page(qtbot, ctx):
    from desktop.pages.workshop.page import WorkshopPage

    widget = WorkshopPage(ctx)
    qtbot.addWidget(widget)
    widget.resize(1280, 800)
    return widget


def _quantize(qtbot, page, ref: str, type_name: str) -> None:
    tab = page.quantize
    tab.source.set_text(ref)
    tab.type_box.setCurrentIndex(tab.type_box.findData(type_name))
    qtbot.mouseClick(tab.run_button, qtbot_button())
    qtbot.waitUntil(lambda: tab.run_button.isEnabled(), timeout=120000)


def qtbot_button():
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_quantize_then_measure_then_the_one_bit_view(qtbot, page, tiny, tmp_path, engines):
    tab = page.quantize
    with qtbot.waitSignal(tab.quantized, timeout=120000):
        _quantize(qtbot, page, str(tiny), "Q4_K_M")
    shown = tab.result.toPlainText()
    assert "tiny.Q4_K_M.gguf" in shown and "fell back to" in shown
    assert (models_dir() / "tiny.Q4_K_M.gguf").is_file()
    # The new model is in the Measure tab's list, after the one we add first.
    measure = page.measure
    assert measure.refs() == [str(models_dir() / "tiny.Q4_K_M.gguf")]
    measure.models.clear()
    measure.add_model(str(tiny))
    measure.add_model(str(models_dir() / "tiny.Q4_K_M.gguf"))
    text = tmp_path / "text.txt"
    text.write_text("the water is long and the day was made of one word " * 12)
    measure.text_path.setText(str(text))
    measure.ctx_box.setValue(64)
    with qtbot.waitSignal(measure.measured, timeout=120000):
        qtbot.mouseClick(measure.run_button, qtbot_button())
    assert measure.table.rowCount() == 2
    assert measure.table.item(0, 0).text().endswith("(reference)")
    assert measure.table.item(1, 1).text() == "Q4_K_M"
    assert float(measure.table.item(1, 7).text()) > 0  # perplexity
    assert len(measure.plot.getPlotItem().listDataItems()) == 1
    # The 1-bit view of a tensor: histogram, shares, reconstruction error.
    one_bit = page.ternary
    one_bit.picker.set_text(str(tiny))
    with qtbot.waitSignal(one_bit.viewed, timeout=60000):
        qtbot.mouseClick(one_bit.open_button, qtbot_button())
    assert one_bit.tensor_box.count() > 3
    assert "Reconstruction error" in one_bit.stats.text()
    # Every matrix ternarised, written to the library as F16, measured before and after.
    one_bit.text_path.setText(str(text))
    with qtbot.waitSignal(one_bit.measured, timeout=120000):
        qtbot.mouseClick(one_bit.ternarise_button, qtbot_button())
    result = one_bit.result.toPlainText()
    assert "Perplexity before" in result and "trained ternary" in result
    assert (models_dir() / "tiny.ternary-F16.gguf").is_file()
    page.tabs.setCurrentWidget(one_bit)
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(SHOTS / "workshop-1bit.png"))


def test_a_damaged_model_says_so(qtbot, page, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    _quantize(qtbot, page, str(bad), "Q8_0")
    assert "damaged" in page.quantize.progress.label.text()
    assert "Not quantized" in page.quantize.result.toPlainText()
    assert list(models_dir().iterdir()) == []


def test_an_unreadable_tensor_type_says_so(qtbot, page, tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 292), dtype=np.uint8),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    _quantize(qtbot, page, str(path), "Q4_0")
    assert "Q8_K, which the dequantizer cannot read" in page.quantize.progress.label.text()
    assert list(models_dir().iterdir()) == []


def test_no_free_space_is_refused_before_writing(qtbot, page, tiny, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 4096, 4096))
    _quantize(qtbot, page, str(tiny), "Q8_0")
    assert "not enough free space" in page.quantize.progress.label.text()
    assert list(models_dir().iterdir()) == []


@pytest.mark.real_model
def test_stop_mid_write_leaves_no_partial_file(qtbot, page, smollm2):
    tab = page.quantize
    tab.source.set_text(str(smollm2))
    tab.type_box.setCurrentIndex(tab.type_box.findData("Q8_0"))
    qtbot.mouseClick(tab.run_button, qtbot_button())
    # After the F16 copy, llama.cpp's quantizer writes the output tensor by tensor.
    writing = re.compile(r"^quantizing to Q8_0: tensor (\d+)/")

    def well_into_the_output() -> bool:
        m = writing.match(tab.progress.label.text())
        return m is not None and int(m[1]) >= 60

    qtbot.waitUntil(well_into_the_output, timeout=120000)
    partial = [p.name for p in models_dir().iterdir()
               if ".partial-" in p.name and not p.name.endswith(".f16")]
    qtbot.mouseClick(tab.progress.stop, qtbot_button())
    qtbot.waitUntil(lambda: tab.run_button.isEnabled(), timeout=30000)
    assert partial, "the quantizer was writing when Stop was pressed"
    assert tab.progress.label.text().startswith("Stopped")
    qtbot.waitUntil(lambda: list(models_dir().iterdir()) == [], timeout=10000)
