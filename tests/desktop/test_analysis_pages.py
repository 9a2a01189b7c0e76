"""Tokens and Embeddings pages driven like a user would, rendered to PNG for a look."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from core.analysis.tokens import differing_cuts

SHOTS = Path(os.environ.get("CORRAL_SHOTS", "/tmp/corral-shots"))
TEXT = "Hello, wörld! 👋 The model reads tokens, not words: naïve café [SEP] </s>"
SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Stock markets fell sharply today.",
    "Shares dropped as investors panicked.",
    "How do I bake sourdough bread?",
    "A recipe for baking bread at home.",
]


def save(widget, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    assert widget.grab().save(str(path), "PNG")
    return path


@pytest.fixture
def engines():
    yield
    from core.models.engine import close_all

    close_all()


def test_tokens_page_shows_three_tokenizers_side_by_side(qtbot, ctx, tiny_gguf, engines):
    from desktop.pages.tokens.page import EMPTY_TEXT, TokensPage

    page = TokensPage(ctx)
    qtbot.addWidget(page)
    page.resize(1100, 760)
    assert page.status.text() == EMPTY_TEXT  # the empty state teaches first
    page.model_ref.setCurrentText(str(tiny_gguf))
    page.text.setPlainText(TEXT)
    worker = page.tokenize()
    with qtbot.waitSignal(worker.signals.done, timeout=60000):
        pass
    assert [r.kind for r in page.results] == ["sentencepiece", "wordpiece", "bpe"]
    strips = page.strips()
    assert len(strips) == 3
    llama = page.results[0]
    assert llama.lossless and "".join(s.text for s in llama.spans) == TEXT
    assert differing_cuts(page.results)  # the three disagree somewhere, and the page says so
    assert "disagree" in page.status.text()
    # hover details: id, exact bytes, special flag
    from desktop.pages.tokens.widgets import token_tooltip

    byte_span = next(s for s in llama.spans if s.piece == "<0xF0>")
    tip = token_tooltip(byte_span, llama.kind)
    assert f"id {byte_span.id}" in tip and "bytes: F0" in tip and "special token: no" in tip
    strip = strips[0]
    html = strip.toHtml()
    assert "&lt;0xF0&gt;" in html
    wp = page.results[1]
    typed_sep = next(s for s in wp.spans if s.text == "[SEP]")
    assert typed_sep.special  # the embedder really reads a typed [SEP] as its separator
    assert "special token: yes" in token_tooltip(typed_sep, wp.kind)
    page.show_one_hot.setChecked(True)
    assert page.one_hot_table.rowCount() > 0
    save(page, "tokens_three_tokenizers.png")


def test_tokens_page_receives_text_from_other_pages(qtbot, ctx):
    from desktop.pages.tokens.page import TokensPage

    page = TokensPage(ctx)
    qtbot.addWidget(page)
    page.use_bpe.setChecked(False)
    with qtbot.waitSignal(ctx.jobs.busy_changed, timeout=10000, check_params_cb=lambda n: n == 0):
        ctx.bus.send_to_tokens.emit("[INST] Hi [/INST]")
    assert page.text.toPlainText() == "[INST] Hi [/INST]"
    assert len(page.results) == 1 and page.results[0].kind == "wordpiece"


def test_tokens_page_lists_local_models_in_the_background(qtbot, ctx):
    from desktop.pages.tokens.page import TokensPage

    page = TokensPage(ctx)
    qtbot.addWidget(page)
    worker = page.list_models()  # it may finish before a signal wait could be armed
    qtbot.waitUntil(lambda: worker.is_done, timeout=10000)
    assert page.model_ref.currentText() == ""  # nothing imported in a fresh CORRAL_HOME


def test_bpe_step_by_step_walks_merges(qtbot, ctx):
    from desktop.pages.tokens.page import TokensPage

    page = TokensPage(ctx)
    qtbot.addWidget(page)
    page.resize(900, 600)
    page.tabs.setCurrentIndex(1)
    assert not page.bpe_prev.isEnabled()
    page.bpe_next.click()
    assert page.bpe_step_label.text().startswith("Step 1: merge 'e' + 's'")
    for _ in range(4):
        page.bpe_next.click()
    assert "'lo' + 'w'" in page.bpe_step_label.text()
    assert "[low]" in page.bpe_table.item(0, 0).text()
    page.bpe_prev.click()
    assert page.bpe_step_label.text().startswith("Step 4")
    save(page, "tokens_bpe_steps.png")


def test_similarity_heatmap_of_six_sentences(qtbot, ctx, tmp_path):
    from core.analysis.similarity import similarity_matrix
    from desktop.pages.embeddings.page import EmbeddingsPage

    page = EmbeddingsPage(ctx)
    qtbot.addWidget(page)
    page.resize(1100, 760)
    page.set_sentences(SENTENCES)
    with qtbot.waitSignal(page.matrix_ready, timeout=120000):
        page.compute_matrix()
    name, vectors = page.vectors[0]
    m = page.heatmap_a.matrix
    assert m is not None and m.shape == (6, 6)
    np.testing.assert_allclose(m, similarity_matrix(vectors, "cosine"))
    assert "4 ↔ 3" in page.heatmap_a.cell_text(3, 2)
    save(page, "embeddings_heatmap_cosine.png")
    page.measure_box.setCurrentIndex(page.measure_box.findData("euclidean"))
    page.order.setCurrentIndex(page.order.findData("clustered"))
    _, mat, order = page.current_matrices()[0]
    assert sorted(order) == list(range(6)) and (np.diag(mat) == 0).all()
    pos = {item: k for k, item in enumerate(order)}
    assert abs(pos[0] - pos[1]) == 1 and abs(pos[2] - pos[3]) == 1  # pairs sit together
    csv_path = page.export_csv(str(tmp_path / "m.csv"))
    assert csv_path and "A kitten is resting" in Path(csv_path).read_text()
    png = page.export_png(page.heatmaps, str(tmp_path / "m.png"))
    assert png and Path(png).stat().st_size > 1000
    save(page, "embeddings_heatmap_euclidean_clustered.png")


@pytest.fixture
def small_kb(tmp_path):
    from core.rag.indexing import index_paths
    from core.rag.knowledge_base import create_kb
    from core.rag.store import close_stores

    docs = tmp_path / "docs"
    docs.mkdir()
    topics = {
        "cats": ["Cats sleep most of the day and purr when they are content.",
                 "A kitten plays with a ball of yarn on the rug.",
                 "My cat chases mice in the garden at night."],
        "baking": ["Sourdough bread needs a lively starter and patience.",
                   "Knead the dough, then let it rise overnight in a warm kitchen.",
                   "Bake the loaf in a hot oven until the crust is brown."],
        "markets": ["Stocks fell sharply today as investors sold in a panic.",
                    "The central bank raised interest rates again this quarter.",
                    "Bond yields climbed while the currency weakened."],
    }
    for topic, lines in topics.items():
        for n, line in enumerate(lines):
            (docs / f"{topic}-{n}.txt").write_text(line, encoding="utf-8")
    kb = create_kb("notes")
    try:
        index_paths(kb, [docs])
    finally:
        kb.close()
    yield "notes"
    close_stores()


def test_corpus_map_of_a_knowledge_base_with_a_query(qtbot, ctx, small_kb):
    from desktop.pages.embeddings.page import EmbeddingsPage

    page = EmbeddingsPage(ctx)
    qtbot.addWidget(page)
    page.resize(1200, 800)
    page.tabs.setCurrentIndex(1)
    page.refresh_knowledge_bases()
    qtbot.waitUntil(lambda: page.kb_box.currentText() == "notes", timeout=60000)
    with qtbot.waitSignal(page.map_ready, timeout=120000):
        page.compute_map()
    corpus = page.corpus
    assert len(corpus) == 9 and len(set(corpus.documents)) == 9
    assert page.map_view.coords is not None and page.map_view.coords.shape == (len(corpus), 2)
    page.query.setText("my kitten is purring")
    page.k.setValue(3)
    with qtbot.waitSignal(page.query_ready, timeout=120000):
        page.find_neighbours()
    assert page.neighbours.rowCount() == 3
    assert all("cats-" in corpus.documents[h.index] for h in page.hits[:2])
    top = page.hits[0]
    # unit vectors: euclidean^2 = 2 - 2 cos, as shown in the table
    assert top.euclidean**2 == pytest.approx(2 - 2 * top.cosine, abs=1e-5)
    assert page.neighbours.item(0, 2).text() == f"{top.cosine:.4f}"
    page.open_chunk(top.index)
    assert corpus.texts[top.index] in page.chunk_view.toPlainText()
    save(page, "embeddings_corpus_map_query.png")


def test_corpus_map_from_vectors_and_hover(qtbot, ctx):
    from core.analysis.corpus import corpus_from_vectors
    from desktop.pages.embeddings.page import EmbeddingsPage

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16)) * 5
    vecs = np.vstack([c + rng.standard_normal((40, 16)) for c in centres])
    docs = [f"/docs/doc{i // 40}.txt" for i in range(120)]
    corpus = corpus_from_vectors(vecs, [f"chunk {i}" for i in range(120)], docs)
    page = EmbeddingsPage(ctx)
    qtbot.addWidget(page)
    page.resize(1000, 700)
    page.show()
    page.tabs.setCurrentIndex(1)
    qtbot.waitExposed(page)
    with qtbot.waitSignal(page.map_ready, timeout=30000):
        page.compute_map(corpus)
    view = page.map_view
    vb = view.plot.vb
    x, y = page.coords[7]
    scene_pos = vb.mapViewToScene(__import__("PySide6.QtCore").QtCore.QPointF(float(x), float(y)))
    assert view.point_at(scene_pos) == 7
    view._moved(scene_pos)
    assert "chunk 7" in view.hover.text()
    with qtbot.waitSignal(view.chunk_clicked, timeout=1000) as blocker:
        view.chunk_clicked.emit(view.point_at(scene_pos))
    assert blocker.args == [7]
