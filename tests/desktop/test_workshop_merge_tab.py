"""The Merge tab, driven as a user would: pick models and a method, merge, Stop; each fault
says what happened in a sentence and leaves no file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from tests.core.test_workshop_merge import field, rewrite
from tools.tiny_gguf import make_tiny_gguf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("merge-tab")
    return {"a": make_tiny_gguf(d / "a.gguf", seed=1), "b": make_tiny_gguf(d / "b.gguf", seed=2)}


@pytest.fixture
def tab(qtbot, ctx):
    from desktop.pages.workshop.merge_tab import MergeTab

    widget = MergeTab(ctx)
    qtbot.addWidget(widget)
    widget.resize(900, 700)
    return widget


def choose(tab, qtbot, method: str, *models: Path, out: Path) -> None:
    tab.method.setCurrentIndex(tab.method.findData(method))
    for m in models:
        tab.picker.set_text(str(m))
        qtbot.mouseClick(tab.add_button, Qt.MouseButton.LeftButton)
    tab.out.setText(str(out))


def run(tab, qtbot) -> None:
    qtbot.mouseClick(tab.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.run_button.isEnabled(), timeout=30000)


def test_slerp_through_the_tab_lands_in_the_library(tab, qtbot, ctx, tiny, tmp_path) -> None:
    from core.models import library

    out = tmp_path / "merged.gguf"
    choose(tab, qtbot, "slerp", tiny["a"], tiny["b"], out=out)
    assert not tab.density.isVisible() and tab.t.isVisibleTo(tab)  # the rows of its method
    tab.t.setText("0,1")
    with qtbot.waitSignal(ctx.bus.models_changed, timeout=30000):
        qtbot.mouseClick(tab.run_button, Qt.MouseButton.LeftButton)
    assert out.is_file() and library.get("merged") is not None
    text = tab.result.toPlainText()
    assert "merged.gguf" in text and "tokenizer and chat template taken from a.gguf" in text
    assert field(out, "corral.merge.method") == "slerp"
    assert "Wrote merged.gguf" in tab.progress.label.text()


def test_a_moe_from_the_form_has_its_experts(tab, qtbot, tiny, tmp_path) -> None:
    out = tmp_path / "moe.gguf"
    choose(tab, qtbot, "moe", tiny["a"], tiny["b"], out=out)
    tab.experts.setPlainText("hello world | good day\nthe model answer\n")
    run(tab, qtbot)
    assert field(out, "llama.expert_count") == 2, tab.result.toPlainText()
    assert "2 experts" in tab.result.toPlainText()


def test_a_bad_parameter_is_explained_and_nothing_starts(tab, qtbot, tiny, tmp_path) -> None:
    choose(tab, qtbot, "passthrough", tiny["a"], out=tmp_path / "x.gguf")
    tab.layers.setText("first half")
    assert tab.start() is None
    assert "MODEL:START-END" in tab.progress.label.text() and tab.run_button.isEnabled()


@pytest.mark.parametrize("fault", ["vocab", "damaged", "dtype", "disk"])
def test_each_fault_gets_a_sentence_and_leaves_no_file(tab, qtbot, tiny, tmp_path, monkeypatch,
                                                      fault) -> None:
    other = tiny["b"]
    if fault == "vocab":
        tokens = list(field(tiny["b"], "tokenizer.ggml.tokens"))
        tokens[-1] = "zz"
        other = rewrite(tiny["b"], tmp_path / "v.gguf", set_kv={"tokenizer.ggml.tokens": tokens})
    elif fault == "damaged":
        other = tmp_path / "cut.gguf"
        other.write_bytes(tiny["b"].read_bytes()[:60_000])
    elif fault == "dtype":
        other = rewrite(tiny["b"], tmp_path / "i.gguf",
                        tensor=("blk.1.ffn_up.weight", np.zeros((128, 64), np.int32)))
    else:
        import shutil

        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 10))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    choose(tab, qtbot, "linear", tiny["a"], other, out=out_dir)
    run(tab, qtbot)
    words = {"vocab": "vocabularies", "damaged": "damaged", "dtype": "cannot read",
             "disk": "not enough free space"}[fault]
    assert words in tab.progress.label.text()
    assert "Not merged" in tab.result.toPlainText() and "Traceback" not in tab.result.toPlainText()
    assert not any(out_dir.iterdir())


def test_stop_mid_write_leaves_no_file(tab, qtbot, tiny, tmp_path, monkeypatch) -> None:
    import time

    from core.workshop import merge_io

    encode = merge_io._encode

    def slow(x, stored):  # a big model's pace: each tensor takes a moment
        time.sleep(0.05)
        return encode(x, stored)

    monkeypatch.setattr(merge_io, "_encode", slow)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    choose(tab, qtbot, "linear", tiny["a"], tiny["b"], out=out_dir)
    qtbot.mouseClick(tab.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.progress.bar.value() > 0, timeout=10000)
    assert any(out_dir.iterdir())  # the partial file is being written
    qtbot.mouseClick(tab.progress.stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.run_button.isEnabled(), timeout=10000)
    assert "Stopped" in tab.progress.label.text()
    assert not any(out_dir.iterdir())
