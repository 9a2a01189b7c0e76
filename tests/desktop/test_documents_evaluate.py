"""The Documents page's Evaluate tab, driven as a user would: it shows that no run exists
yet, runs an evaluation with progress, cancels one half-way (the last stored run stays), runs
one to the end (table, chart, recommendation), exports CSV and PNG, and shows the stored run
when the page is opened again. Real Chroma and the real MiniLM embedder."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from core.rag.store import close_stores
from desktop.pages.documents.page import DocumentsPage
from tests.core.test_evaluate_run import topical_documents
from tests.fixtures.documents import minilm_embedder

__all__ = ["minilm_embedder"]
pytestmark = pytest.mark.slow
LONG = 180000
SCREENSHOT = Path(__file__).resolve().parents[2] / "resources" / "screenshots" / "documents-evaluate.png"


@pytest.fixture
def topics_kb(tmp_path: Path, minilm_embedder) -> str:
    from core.config import Settings
    from core.rag.chunker import ChunkParams
    from core.rag.indexing import index_paths
    from core.rag.knowledge_base import create_kb

    folder = tmp_path / "docs"
    folder.mkdir()
    for source, text in topical_documents(n_docs=6, sentences=20).items():
        (folder / Path(source).name).write_text(text, encoding="utf-8")
    kb = create_kb("Topics", settings=Settings(), params=ChunkParams(64, 8))
    try:
        index_paths(kb, [folder])
    finally:
        kb.close()
    return "Topics"


def open_page(qtbot, ctx, tab: str = "evaluate") -> DocumentsPage:
    """The Documents page with its ``tab`` (evaluate, tune) in front."""
    page = DocumentsPage(ctx)
    qtbot.addWidget(page)
    page.resize(1100, 720)
    page.tabs.setCurrentWidget(getattr(page, tab))
    return page


def close_page(page: DocumentsPage) -> None:
    page.shutdown()
    page.ctx.jobs.cancel_all()
    page.ctx.jobs.wait_all()


def test_evaluate_tab_runs_cancels_exports_and_remembers(qtbot, ctx, topics_kb, tmp_path):
    page = open_page(qtbot, ctx)
    tab = page.evaluate
    try:
        with qtbot.waitSignal(tab.last_shown, timeout=LONG) as shown:
            pass
        assert shown.args == [None] and "No evaluation yet" in tab.status.text()
        assert not tab.export_csv_button.isEnabled()

        # a run cancelled while MiniLM embeds: nothing shown, the buttons come back
        qtbot.mouseClick(tab.run_button, qtbot_left())
        assert tab.cancel_button.isEnabled() and not tab.run_button.isEnabled()
        qtbot.waitUntil(lambda: "minilm" in tab.status.text(), timeout=LONG)
        with qtbot.waitSignal(tab.stopped, timeout=LONG):
            qtbot.mouseClick(tab.cancel_button, qtbot_left())
        qtbot.waitUntil(lambda: tab.run_button.isEnabled(), timeout=LONG)
        assert "cancelled" in tab.status.text() and tab.table.rowCount() == 0
        assert tab.result is None

        # a whole run: one row per contestant, the recommendation and its reason
        with qtbot.waitSignal(tab.evaluated, timeout=LONG) as done:
            qtbot.mouseClick(tab.run_button, qtbot_left())
        result = done.args[0]
        names = [tab.table.item(r, 0).text() for r in range(tab.table.rowCount())]
        assert names == ["minilm", "bm25", "tfidf", "random"]
        assert tab.recommendation.text() == (f"Recommended: {result.recommendation}, because "
                                             f"{result.reason}.")
        assert tab.table.item(0, 1).text() == f"{result.score('minilm').ndcg_at_10:,.3f}"
        scatter, *labels = tab.chart.getPlotItem().items  # quality against speed
        assert len(scatter.points()) == 4 and sorted(t.textItem.toPlainText()
                                                     for t in labels) == sorted(names)
        qtbot.waitUntil(lambda: tab.run_button.isEnabled(), timeout=LONG)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert page.grab().save(str(SCREENSHOT))

        exported = tab.export_csv(tmp_path / "out.csv")
        assert exported is not None
        rows = list(csv.reader(exported.read_text(encoding="utf-8").splitlines()))
        assert rows[0][:2] == ["Embedder", "nDCG@10"] and [r[0] for r in rows[1:]] == names
        png = tab.export_png(tmp_path / "out.png")
        assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        close_page(page)

    # the page opened again shows the stored run
    again = open_page(qtbot, ctx)
    try:
        with qtbot.waitSignal(again.evaluate.last_shown, timeout=LONG) as shown:
            pass
        assert shown.args[0] is not None and shown.args[0].created == result.created
        assert again.evaluate.table.rowCount() == 4
    finally:
        close_page(again)
        close_stores()


def qtbot_left():
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton
