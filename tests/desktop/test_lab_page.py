"""The Lab page driven as a user would: a training run stopped half-way, then each tab run to
its end and rendered to PNG for a look."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

SHOTS = Path(os.environ.get("CORRAL_SHOTS", "/tmp/corral-shots"))
FRUIT = {"apple", "banana", "cherry", "mango", "peach"}


def save(widget, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert widget.grab().save(str(SHOTS / name), "PNG")


def finish(qtbot, worker, timeout: int = 120000) -> None:
    assert worker is not None
    with qtbot.waitSignal(worker.signals.done, timeout=timeout):
        pass


def cell(table, row: int, col: int) -> str:
    item = table.item(row, col)
    return item.text() if item is not None else ""


@pytest.fixture
def page(qtbot, ctx):
    from desktop.pages.lab.page import LabPage

    page = LabPage(ctx)
    qtbot.addWidget(page)
    page.resize(1280, 820)
    return page


def test_a_training_run_shows_progress_and_stops_keeping_what_it_learnt(qtbot, page) -> None:
    tab = page.vectors_tab
    tab.method.setCurrentIndex(tab.method.findData("glove"))
    tab.epochs.setValue(5000)  # far longer than the test waits
    qtbot.mouseClick(tab.run.start_button, Qt.MouseButton.LeftButton)
    assert not tab.run.start_button.isEnabled() and tab.run.stop_button.isEnabled()
    # progress moves (1/1000 of 5000 epochs: five done) and says where it is
    qtbot.waitUntil(lambda: tab.run.progress.value() > 0 and "GloVe epoch" in tab.run.status.text(),
                    timeout=60000)
    worker = next(w for w in page.ctx.jobs.running if w.group == "lab-train")
    with qtbot.waitSignal(worker.signals.done, timeout=60000):
        qtbot.mouseClick(tab.run.stop_button, Qt.MouseButton.LeftButton)
    status = tab.run.status.text()
    assert status.startswith("Stopped after ") and "of 5000 epochs" in status
    assert tab.run.start_button.isEnabled() and not tab.run.stop_button.isEnabled()
    assert page.vectors is not None and 5 <= page.vectors.epochs < 5000
    assert len(tab.map.words) == 44  # the partial vectors are on the map

    # a full run: the planted families come out, nearest words and an analogy show
    tab.method.setCurrentIndex(tab.method.findData("cbow"))
    tab.epochs.setValue(30)
    finish(qtbot, tab.train())
    assert "cbow: 44 words, 20 dimensions, 30 epochs" in tab.run.status.text()
    tab.word.setText("mango")
    qtbot.mouseClick(tab.nearest_button, Qt.MouseButton.LeftButton)
    assert {cell(tab.nearest_table, r, 0) for r in range(4)} == FRUIT - {"mango"}
    qtbot.mouseClick(tab.analogy_button, Qt.MouseButton.LeftButton)
    assert cell(tab.analogy_table, 0, 0) in FRUIT  # cat - dog + apple
    tab.word.setText("unicorn")
    qtbot.mouseClick(tab.nearest_button, Qt.MouseButton.LeftButton)
    assert "not in the vocabulary: unicorn" in tab.note.text()
    tab.word.setText("cat")
    tab.show_nearest()
    save(page, "lab.png")

    # the dimension experiment, on real English so that the test sets cover some words
    page.tabs.setCurrentWidget(page.dimensions_tab)
    assert page.source.select("preset", "news")
    tab.epochs.setValue(5)
    dims = page.dimensions_tab
    dims.dims.setText("10, 40")
    finish(qtbot, dims.start())
    assert dims.table.rowCount() == 2 and cell(dims.table, 1, 0) == "40"
    assert "Coverage: 163 of 353 word pairs, 1783 of 19544 analogies" in dims.run.status.text()
    assert cell(dims.table, 0, 2) != "–"  # a score for each size
    save(page, "lab-dimensions.png")


def test_cooccurrence_stemming_tabs(qtbot, page) -> None:
    page.tabs.setCurrentWidget(page.cooccur_tab)
    assert page.source.select("preset", "cat-dog")
    tab = page.cooccur_tab
    finish(qtbot, tab.count())
    words = [tab.table.horizontalHeaderItem(c).text() for c in range(tab.table.columnCount())]
    assert words[:3] == ["the", "cat", "dog"] and len(words) == 8
    assert cell(tab.table, words.index("fluffy"), words.index("is")) == "2.000"
    assert cell(tab.table, words.index("cat"), words.index("dog")) == "·"  # never within 2
    save(page, "lab-cooccur.png")

    page.tabs.setCurrentWidget(page.stem_tab)
    stem = page.stem_tab
    stem.words.setText("running happily better")
    stem.part_of_speech.setCurrentIndex(stem.part_of_speech.findData("adj"))
    finish(qtbot, stem.stem())
    rows = [[cell(stem.table, r, c) for c in range(3)] for r in range(3)]
    assert rows == [["running", "run", "run"], ["happily", "happili", "happily"],
                    ["better", "better", "good"]]
    assert stem.measure() is None  # a preset is no knowledge base: the page says so
    assert "pick one as the text" in stem.recall.status.text()
    save(page, "lab-stemming.png")


@pytest.mark.slow
def test_contextual_and_classifier_tabs(qtbot, page, tmp_path) -> None:
    from desktop.pages.lab.models import SENTENCES

    text = tmp_path / "banks.txt"
    text.write_text((SENTENCES + "\n") * 20, encoding="utf-8")
    page.source.add_file(str(text))
    finish(qtbot, page.vectors_tab.train())  # word2vec that knows "bank": the static side
    page.tabs.setCurrentWidget(page.context_tab)
    ctx_tab = page.context_tab
    finish(qtbot, ctx_tab.compare(), timeout=180000)
    assert ctx_tab.contextual.rowCount() == 3
    assert {cell(ctx_tab.static, r, c) for r in range(3) for c in range(3)} == {"1.000"}
    assert float(cell(ctx_tab.contextual, 0, 1)) < 0.95  # river bank vs money bank
    assert "Mean pooling by hand matches" in ctx_tab.run.status.text()
    steps = ctx_tab.steps.toPlainText()
    assert steps.count("— cosine ") == 3
    assert all(float(part.split()[0]) >= 0.99999 for part in steps.split("— cosine ")[1:])
    save(page, "lab-contextual.png")

    page.tabs.setCurrentWidget(page.classifier_tab)
    cls = page.classifier_tab
    finish(qtbot, cls.train(), timeout=180000)
    for label, _table in cls.sides:
        accuracy = float(label.text().split("accuracy ")[1].split("%")[0])
        assert accuracy >= 95.0, label.text()
    save(page, "lab-classifier.png")
