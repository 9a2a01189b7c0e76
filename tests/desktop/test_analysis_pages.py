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
    from core.models.pool import close_all

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
        page.receive_text("[INST] Hi [/INST]", "")
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
def small_kb(tmp_path, ctx):
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
    kb = create_kb("notes", settings=ctx.settings)
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
    # The tab also listed the knowledge bases (there are none): that ends, and keeps the map.
    qtbot.waitUntil(lambda: not ctx.jobs.running, timeout=60000)
    assert page.kb_box.count() == 0 and page.corpus is corpus


# --- old input is never painted: superseded and cancelled jobs -----------------------------


class Gates:
    """Slow job stand-ins: a job for ``key`` says it started, then waits until the test opens
    its gate. Every gate opens at teardown, so no worker outlives a failing test."""

    def __init__(self, *keys: str) -> None:
        import threading

        self.started = {k: threading.Event() for k in keys}
        self.gate = {k: threading.Event() for k in keys}

    def __contains__(self, key: object) -> bool:
        return key in self.gate

    def hold(self, key: str) -> None:
        """In the worker: say so, then wait for the test."""
        self.started[key].set()
        assert self.gate[key].wait(30), f"the test never released {key!r}"

    def open(self, key: str) -> None:
        self.gate[key].set()

    def open_all(self) -> None:
        for gate in self.gate.values():
            gate.set()


@pytest.fixture
def gates():
    made: list[Gates] = []

    def make(*keys: str) -> Gates:
        made.append(Gates(*keys))
        return made[-1]

    yield make
    for g in made:
        g.open_all()


def _strip_texts(page) -> list[str]:
    return [s.result.text for s in page.strips()]


def test_tokens_never_paints_a_superseded_or_cancelled_run(qtbot, ctx, gates, monkeypatch):
    from core.analysis.token_sources import open_tokenizer
    from desktop.pages.tokens import page as tokens_page

    real_job = tokens_page._tokenize_job
    slow = gates("old text", "cancelled text")

    def job(job, text, entries, settings, parse_special):
        if text in slow:
            slow.hold(text)
            # A stubborn job: it ignores its cancellation and reports, and returns, anyway.
            job.progress(0.5, "stale progress")
            job.partial(("stale", open_tokenizer("wordpiece", settings)))
            return [open_tokenizer("wordpiece", settings).tokenize(text)]
        return real_job(job, text, entries, settings, parse_special)

    monkeypatch.setattr(tokens_page, "_tokenize_job", job)
    page = tokens_page.TokensPage(ctx)
    qtbot.addWidget(page)
    page.use_bpe.setChecked(False)  # the embedder's WordPiece only: fast and offline

    # The user types on while the old text is still being tokenized.
    page.text.setPlainText("old text")
    old = page.tokenize()
    qtbot.waitUntil(slow.started["old text"].is_set, timeout=10000)
    page.text.setPlainText("new text")
    new = page.tokenize()
    qtbot.waitUntil(lambda: new.is_done, timeout=30000)
    assert [r.text for r in page.results] == ["new text"]
    slow.open("old text")
    qtbot.waitUntil(lambda: old.is_done, timeout=10000)
    assert [r.text for r in page.results] == ["new text"]  # the old run painted nothing
    assert _strip_texts(page) == ["new text"]
    assert "stale" not in page._tokenizers and "stale" not in page.status.text()
    assert page.status.text().startswith("Hover a token")

    # A cancelled run (the page or the app stops it): only on_cancelled speaks.
    page.text.setPlainText("cancelled text")
    stopped = page.tokenize()
    qtbot.waitUntil(slow.started["cancelled text"].is_set, timeout=10000)
    ctx.jobs.cancel(tokens_page.TOKENIZE_GROUP)
    slow.open("cancelled text")
    qtbot.waitUntil(lambda: stopped.is_done, timeout=10000)
    assert [r.text for r in page.results] == ["new text"]
    assert _strip_texts(page) == ["new text"]
    assert page.status.text() == tokens_page.STOPPED_TEXT


def test_tokens_cleared_text_is_not_painted_over_by_a_running_job(qtbot, ctx, gates, monkeypatch):
    from core.analysis.token_sources import open_tokenizer
    from desktop.pages.tokens import page as tokens_page

    slow = gates("some text")

    def job(job, text, entries, settings, parse_special):
        slow.hold(text)
        return [open_tokenizer("wordpiece", settings).tokenize(text)]

    monkeypatch.setattr(tokens_page, "_tokenize_job", job)
    page = tokens_page.TokensPage(ctx)
    qtbot.addWidget(page)
    page.use_bpe.setChecked(False)
    page.text.setPlainText("some text")
    running = page.tokenize()
    qtbot.waitUntil(slow.started["some text"].is_set, timeout=10000)
    page.text.clear()
    assert page.tokenize() is None  # nothing to tokenize: the empty state, at once
    slow.open("some text")
    qtbot.waitUntil(lambda: running.is_done, timeout=10000)
    assert page.results == [] and page.strips() == []
    assert page.status.text() == tokens_page.EMPTY_TEXT


def test_similarity_matrix_never_paints_a_superseded_or_cancelled_run(qtbot, ctx, gates,
                                                                      monkeypatch):
    from desktop.pages.embeddings import page as emb_page

    slow = gates("old", "cancelled")
    rng = np.random.default_rng(1)

    def job(job, texts, specs, mode, ollama):
        key = texts[0].split()[0]
        if key in slow:
            slow.hold(key)
            job.progress(0.5, "stale progress")
            return [(f"{key}-embedder", rng.standard_normal((len(texts), 8)))]  # ignores cancel
        return [("new-embedder", rng.standard_normal((len(texts), 8)))]

    monkeypatch.setattr(emb_page, "_embed_job", job)
    page = emb_page.EmbeddingsPage(ctx)
    qtbot.addWidget(page)
    ready: list[str] = []
    page.matrix_ready.connect(lambda: ready.append(page.vectors[0][0]))

    old_sentences = [f"old sentence {i}" for i in range(4)]
    new_sentences = [f"new sentence {i}" for i in range(3)]
    page.set_sentences(old_sentences)
    old = page.compute_matrix()
    qtbot.waitUntil(slow.started["old"].is_set, timeout=10000)
    page.set_sentences(new_sentences)
    new = page.compute_matrix()
    qtbot.waitUntil(lambda: new.is_done, timeout=10000)
    slow.open("old")
    qtbot.waitUntil(lambda: old.is_done, timeout=10000)
    assert ready == ["new-embedder"]  # the old run never reached the screen
    assert page.sentences == new_sentences
    assert page.heatmap_a.matrix is not None and page.heatmap_a.matrix.shape == (3, 3)
    assert "old sentence" not in page.legend.text()
    assert page.matrix_status.text().endswith("Brighter cells are closer.")  # not "stopped"
    shown = page.heatmap_a.matrix.copy()

    page.set_sentences([f"cancelled sentence {i}" for i in range(5)])
    stopped = page.compute_matrix()
    qtbot.waitUntil(slow.started["cancelled"].is_set, timeout=10000)
    ctx.jobs.cancel(emb_page.MATRIX_GROUP)
    slow.open("cancelled")
    qtbot.waitUntil(lambda: stopped.is_done, timeout=10000)
    assert ready == ["new-embedder"]
    assert page.sentences == new_sentences and page.vectors[0][0] == "new-embedder"
    np.testing.assert_array_equal(page.heatmap_a.matrix, shown)
    assert page.matrix_status.text() == emb_page.MATRIX_STOPPED


def _clustered_corpus(n_per_doc: int, docs: int, seed: int, name: str):
    from core.analysis.corpus import corpus_from_vectors

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((docs, 16)) * 5
    vecs = np.vstack([c + rng.standard_normal((n_per_doc, 16)) for c in centres])
    n = len(vecs)
    return corpus_from_vectors(vecs, [f"{name} chunk {i}" for i in range(n)],
                               [f"/docs/{name}-{i // n_per_doc}.txt" for i in range(n)], name)


@pytest.fixture
def two_maps(monkeypatch, gates):
    """Knowledge bases 'alpha' (120 chunks) and 'beta' (30), mapped by the real
    projection ('slow alpha': slowly, stubbornly, and to a third, stale corpus); a query job that finds the nearest chunks of the chunk its text names
    (e.g. "chunk 7"), slowly for the texts given to ``slow``, and stubbornly: it ignores
    being cancelled."""
    from core.analysis.projection import Projector, nearest_neighbours
    from desktop.pages.embeddings import page as emb_page

    corpora = {"alpha": _clustered_corpus(40, 3, 0, "alpha"),
               "beta": _clustered_corpus(10, 3, 1, "beta")}
    real_map_job = emb_page._map_job
    slow = gates("slow alpha", "slow chunk 7", "chunk 11", "chunk 12", "chunk 13")
    queries: list[str] = []

    def map_job(job, source, method, settings):
        if source == "slow alpha":
            slow.hold(source)
            stale = _clustered_corpus(5, 2, 2, "stale")
            projector = Projector(method)
            return stale, projector, projector.fit(stale.vectors)  # ignores being cancelled
        return real_map_job(job, corpora[source], method, settings)

    def query_job(job, corpus, projector, query, k, by, ollama):
        queries.append(query)
        if query in slow:
            slow.hold(query)
        i = int(query.split()[-1])
        q = corpus.vectors[i]
        return projector.place(q[None, :])[0], nearest_neighbours(corpus.vectors, q, k=k, by=by)

    monkeypatch.setattr(emb_page, "_kb_names_job", lambda job, settings: [*corpora, "slow alpha"])
    monkeypatch.setattr(emb_page, "_map_job", map_job)
    monkeypatch.setattr(emb_page, "_query_job", query_job)
    return corpora, slow


def _map_page(qtbot, ctx):
    """The Embeddings page on its Corpus map tab, its three knowledge bases listed."""
    from desktop.pages.embeddings.page import EmbeddingsPage

    page = EmbeddingsPage(ctx)
    qtbot.addWidget(page)
    page.tabs.setCurrentIndex(1)  # lists the knowledge bases
    qtbot.waitUntil(lambda: page.kb_box.count() == 3, timeout=10000)
    return page


def _no_query_on_map(page) -> None:
    assert page.hits == [] and page.neighbours.rowCount() == 0
    assert len(page.map_view.query_item.data) == 0
    assert len(page.map_view.neigh_item.data) == 0


def test_corpus_map_never_paints_a_superseded_or_cancelled_query(qtbot, ctx, two_maps):
    from desktop.pages.embeddings import page as emb_page

    corpora, slow = two_maps
    page = _map_page(qtbot, ctx)
    answered: list[list[int]] = []
    page.query_ready.connect(lambda: answered.append([h.index for h in page.hits]))

    # A slow map of one knowledge base, superseded by a map of another: only the last lands.
    maps: list[str] = []
    page.map_ready.connect(lambda: maps.append(page.corpus.name))
    page.kb_box.setCurrentText("slow alpha")
    slow_map = page.compute_map()
    qtbot.waitUntil(slow.started["slow alpha"].is_set, timeout=10000)
    page.kb_box.setCurrentText("alpha")
    with qtbot.waitSignal(page.map_ready, timeout=30000):
        page.map_button.click()
    slow.open("slow alpha")
    qtbot.waitUntil(lambda: slow_map.is_done, timeout=10000)
    assert maps == ["alpha"] and page.corpus is corpora["alpha"]
    assert page.map_progress.isHidden()
    assert page.map_status.text().startswith("120 chunks from 3 documents.")  # not "stopped"

    # A slow query superseded by a newer one on the same map: only the newer one's
    # neighbours are drawn.
    page.k.setValue(3)
    page.query.setText("slow chunk 7")
    old = page.find_neighbours()
    qtbot.waitUntil(slow.started["slow chunk 7"].is_set, timeout=10000)
    page.query.setText("chunk 90")
    with qtbot.waitSignal(page.query_ready, timeout=10000):
        page.find_button.click()
    slow.open("slow chunk 7")
    qtbot.waitUntil(lambda: old.is_done, timeout=10000)
    assert answered == [[h.index for h in page.hits]] and page.hits[0].index == 90
    assert page.map_status.text().startswith("The star is your query")  # not "stopped"
    np.testing.assert_allclose(page.map_view.neigh_item.data["x"][0], page.coords[90][0])

    # A cancelled query: its neighbours are not drawn; the status says it stopped.
    page.query.setText("chunk 11")
    stopped = page.find_neighbours()
    qtbot.waitUntil(slow.started["chunk 11"].is_set, timeout=10000)
    ctx.jobs.cancel(emb_page.QUERY_GROUP)
    slow.open("chunk 11")
    qtbot.waitUntil(lambda: stopped.is_done, timeout=10000)
    assert len(answered) == 1 and page.hits[0].index == 90
    assert page.map_status.text() == emb_page.QUERY_STOPPED


def test_a_query_belongs_to_the_map_it_was_started_on(qtbot, ctx, two_maps):
    corpora, slow = two_maps
    page = _map_page(qtbot, ctx)
    answered: list[str] = []
    page.query_ready.connect(lambda: answered.append(page.corpus.name))

    def show_map(name: str) -> None:
        page.kb_box.setCurrentText(name)
        with qtbot.waitSignal(page.map_ready, timeout=30000):
            page.map_button.click()
        assert page.corpus is corpora[name]

    # A query still running on alpha's map when the user switches to beta's.
    show_map("alpha")
    page.query.setText("chunk 12")
    running = page.find_neighbours()
    qtbot.waitUntil(slow.started["chunk 12"].is_set, timeout=10000)
    show_map("beta")
    slow.open("chunk 12")
    qtbot.waitUntil(lambda: running.is_done, timeout=10000)
    assert answered == []
    _no_query_on_map(page)
    assert "chunks from" in page.map_status.text()  # beta's summary, not alpha's query

    # A query on alpha that has found its neighbours, but whose answer has not reached the
    # screen yet, when the user asks for beta's map: too late to cancel, so it is dropped.
    show_map("alpha")
    page.query.setText("chunk 13")
    finished = page.find_neighbours()
    qtbot.waitUntil(slow.started["chunk 13"].is_set, timeout=10000)
    slow.open("chunk 13")
    assert finished.wait(10)  # returned in the worker; its answer waits in the event queue
    page.kb_box.setCurrentText("beta")
    with qtbot.waitSignal(page.map_ready, timeout=30000):
        page.map_button.click()
    qtbot.waitUntil(lambda: finished.is_done, timeout=10000)
    assert answered == [] and page.corpus is corpora["beta"]
    _no_query_on_map(page)

    # And a query on the map now shown still works.
    page.query.setText("chunk 3")
    with qtbot.waitSignal(page.query_ready, timeout=10000):
        page.find_neighbours()
    assert answered == ["beta"] and page.hits[0].index == 3
