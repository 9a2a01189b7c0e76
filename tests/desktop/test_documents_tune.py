"""The Documents page's Tune tab, driven as a user would: it says no tuning exists yet, tunes
with progress, can be cancelled (the knowledge base and the last run stay), shows the best
configuration against the current one with the passages chat should get, applies it (a
re-index swapped in when complete; the page shows the new chunking), and shows the stored run
when the page is opened again. Real Chroma and the real MiniLM embedder."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from core.evaluate.tune import Config
from core.rag.store import close_stores
from tests.core.test_evaluate_tune import planted_documents
from tests.desktop.test_documents_evaluate import close_page, open_page
from tests.fixtures.documents import minilm_embedder

__all__ = ["minilm_embedder"]
pytestmark = pytest.mark.slow
LONG = 180000
#: the search, kept small: the current configuration (32-token chunks, which cut every
#: planted sentence) and one that holds each sentence whole
WINNER = Config("minilm", 64, 0, 0.25)


@pytest.fixture
def planted_kb(tmp_path: Path, minilm_embedder, monkeypatch: pytest.MonkeyPatch) -> str:
    from core.config import Settings
    from core.evaluate import tune_kb
    from core.rag.chunker import ChunkParams
    from core.rag.indexing import index_paths
    from core.rag.knowledge_base import create_kb

    folder = tmp_path / "docs"
    folder.mkdir()
    for doc in planted_documents():
        (folder / Path(doc.source).name).write_text(doc.text, encoding="utf-8")
    kb = create_kb("Planted", settings=Settings(), params=ChunkParams(32, 0))
    try:
        index_paths(kb, [folder])
    finally:
        kb.close()
    monkeypatch.setattr(tune_kb, "grid", lambda _embedders: [WINNER])
    return "Planted"


def test_tune_tab_tunes_cancels_applies_and_remembers(qtbot, ctx, planted_kb, monkeypatch):
    from core.evaluate import tune_kb as tune_module
    from core.rag.knowledge_base import open_kb

    page = open_page(qtbot, ctx, "tune")
    tab = page.tune
    try:
        with qtbot.waitSignal(tab.last_shown, timeout=LONG) as shown:
            pass
        assert shown.args == [None] and "Not tuned yet" in tab.status.text()
        assert not tab.apply_button.isEnabled() and tab.run_button.isEnabled()

        # Cancel: the search stops between trials; nothing is stored, nothing changes
        real = tune_module.tune_kb

        def slow(kb, names, **kw):
            progress = kw["progress"]
            while True:  # as a long search would, asking the progress callback each trial
                progress(0.1, "rung 1 of 2")
                time.sleep(0.02)

        monkeypatch.setattr(tune_module, "tune_kb", slow)
        with qtbot.waitSignal(tab.stopped, timeout=LONG):
            tab.run_tune()
            qtbot.waitUntil(lambda: "rung 1 of 2" in tab.status.text(), timeout=LONG)
            assert tab.cancel_button.isEnabled() and not tab.run_button.isEnabled()
            tab.cancel_button.click()
        assert tab.status.text() == "Tuning cancelled." and tab.result is None
        monkeypatch.setattr(tune_module, "tune_kb", real)

        # a whole run: the winner against the current configuration, and the top-k
        with qtbot.waitSignal(tab.tuned, timeout=LONG) as done:
            tab.run_tune()
        result = done.args[0]
        assert result.best.config == WINNER and result.current.config.chunk_tokens == 32
        rows = [[tab.table.item(r, c).text() for c in range(4)] for r in range(2)]
        assert rows[0][0] == "Current" and "32 tokens" in rows[0][1]
        assert rows[1][0] == "Best" and rows[1][1] == WINNER.label()
        assert float(rows[1][2]) > float(rows[0][2])  # nDCG@10
        summary = tab.summary.text()
        assert f"gains {result.gain:+.3f} nDCG@10" in summary
        assert f"Passages to give chat: {result.top_k}" in summary
        assert tab.apply_button.isEnabled()
        page.grab().save(str(Path(__file__).resolve().parents[2] / "resources" / "screenshots"
                             / "documents-tune.png"))

        # Apply (after the question): re-indexed with the winner, and the page says so
        monkeypatch.setattr(QMessageBox, "question",
                            lambda *a, **k: QMessageBox.StandardButton.Yes)
        with qtbot.waitSignal(tab.applied, timeout=LONG) as applied, \
                qtbot.waitSignal(page.knowledge_bases_loaded, timeout=LONG):
            tab.apply_button.click()
        assert "64-token chunks" in applied.args[0] and "hybrid weight 0.25" in applied.args[0]
        assert tab.status.text().startswith("Applied: ")
        # the stored run now says it was applied, and it cannot be applied twice
        qtbot.waitUntil(lambda: tab.result is not None and bool(tab.result.applied),
                        timeout=LONG)
        assert tab.summary.text().startswith("Applied: ") and not tab.apply_button.isEnabled()
        qtbot.waitUntil(lambda: "64-token chunks" in page.info.text(), timeout=LONG)
        assert f"{result.top_k} passages per chat turn" in page.info.text()
        kb = open_kb("Planted", settings=ctx.settings)
        try:
            assert (kb.params.chunk_tokens, kb.hybrid_weight, kb.top_k) == (64, 0.25, result.top_k)
        finally:
            kb.close()
    finally:
        close_page(page)

    again = open_page(qtbot, ctx, "tune")  # the stored run, on arrival
    try:
        with qtbot.waitSignal(again.tune.last_shown, timeout=LONG) as shown:
            pass
        assert shown.args[0] is not None and shown.args[0].best.config == WINNER
        assert shown.args[0].applied and not again.tune.apply_button.isEnabled()
        assert again.tune.table.item(1, 1).text() == WINNER.label()
    finally:
        close_page(again)
        close_stores()
