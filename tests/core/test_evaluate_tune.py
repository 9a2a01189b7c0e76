"""Auto-tune: successive halving finds the planted best chunk size, keeps within its budget,
fuses as the retriever does, and applies the winner to a real knowledge base on request."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from core.evaluate.tune import Config, Document, fuse, grid, tune
from core.rag.document import TextUnit
from core.rag.embedder import make_embedder
from tests.fixtures.documents import minilm_embedder

__all__ = ["minilm_embedder"]
pytestmark = pytest.mark.slow

WORDS = ("amber basil cedar dune ember fjord glacier heron iris jasper kelp lotus maple "
         "nectar opal pine quartz reed sage thistle umber violet willow yarrow zinnia").split()


def planted_documents(n_docs: int = 3, sentences: int = 3, words: int = 30) -> list[Document]:
    """Sentences of ``words`` words (35-45 MiniLM tokens) and nothing else: a 64-token chunk
    holds one whole (two do not fit); 24- and 32-token chunks cut every one of them."""
    rng = random.Random(3)
    docs = []
    for d in range(n_docs):
        text = " ".join(" ".join(rng.choices(WORDS, k=words)).capitalize() + "."
                        for _ in range(sentences))
        docs.append(Document(f"/docs/planted-{d}.txt", [TextUnit(text)]))
    return docs


def test_auto_tune_finds_the_planted_best_chunk_size(minilm_embedder):
    current = Config("minilm", 32, 0, 0.5)
    configs = [Config("minilm", c, 0, w) for c in (24, 32, 64) for w in (0.0, 0.5)]
    result = tune(planted_documents(), {"minilm": lambda: minilm_embedder}, current,
                  configs=configs, budget_s=600)
    assert result.best.config == Config("minilm", 64, 0, 0.0)  # the first of the ties
    assert result.best.ndcg_at_10 > 0.9 and result.current.ndcg_at_10 == 0.0
    assert result.best.documents == result.current.documents == 3  # compared like with like
    assert not result.stopped_by_budget and result.rungs == 2
    # rung 1 scored all six on two documents; only the best third (and the current) went on
    assert [t.rung for t in result.trials].count(0) == 6
    assert {t.config for t in result.trials if t.rung == 1} == {
        current, Config("minilm", 64, 0, 0.0), Config("minilm", 64, 0, 0.5)}
    assert 1 <= result.top_k <= 20 and result.recall_at_k >= result.recall_at_20 - 0.02


def test_a_spent_budget_stops_the_search_with_an_answer(minilm_embedder):
    current = Config("minilm", 64, 0, 0.5)
    result = tune(planted_documents(), {"minilm": lambda: minilm_embedder}, current,
                  configs=[current, Config("minilm", 32, 0, 0.5)], budget_s=0.0)
    assert result.stopped_by_budget
    assert result.best == result.current and len(result.trials) == 1
    assert any("budget" in n for n in result.notes)


def test_fusion_follows_the_hybrid_weight():
    vector = np.array([[0.9, 0.8, 0.0, 0.1]])
    keyword = np.array([[0.0, 1.0, 5.0, 0.0]])
    order = lambda w: list(np.argsort(-fuse(vector, keyword, w)[0], kind="stable"))  # noqa: E731
    assert order(0.0) == [0, 1, 3, 2]  # vectors only
    assert order(1.0)[:2] == [2, 1]  # keywords only (chunk 0 has no keyword match)
    assert order(0.5)[0] == 1  # second on both sides beats first on one


def test_the_default_grid_keeps_overlap_within_half_a_chunk():
    configs = grid(["minilm"], chunk_tokens=(32, 64), overlaps=(0, 32))
    assert {(c.chunk_tokens, c.overlap_tokens) for c in configs} == {(32, 0), (64, 0), (64, 32)}
    assert len(configs) == 3 * 5


def test_apply_re_indexes_a_knowledge_base_with_the_winner(tmp_path: Path, minilm_embedder,
                                                           capsys):
    from core.cli import main
    from core.config import Settings
    from core.evaluate.tune_kb import apply_best, current_config, load_tune, tune_kb
    from core.rag.chunker import ChunkParams
    from core.rag.indexing import index_paths
    from core.rag.knowledge_base import create_kb, open_kb
    from core.rag.retriever import Retriever
    from core.rag.store import close_stores

    folder = tmp_path / "docs"
    folder.mkdir()
    for doc in planted_documents():
        (folder / Path(doc.source).name).write_text(doc.text, encoding="utf-8")
    settings = Settings()
    kb = create_kb("Planted", settings=settings, params=ChunkParams(32, 0))
    try:
        index_paths(kb, [folder])
        before = current_config(kb)
        configs = [before, Config("minilm", 64, 0, 0.25)]
        result = tune_kb(kb, budget_s=600, configs=configs)
        assert result.best.config == Config("minilm", 64, 0, 0.25)
        assert load_tune(kb) == result  # stored with the knowledge base
        said = apply_best(kb, result)
        assert "hybrid weight 0.25" in said and "64-token chunks" in said
        assert f"{result.top_k} passages per chat turn" in said
    finally:
        kb.close()
    kb = open_kb("Planted", settings=settings)
    try:
        assert (kb.params.chunk_tokens, kb.hybrid_weight) == (64, 0.25)
        assert kb.top_k == result.top_k  # set before the rebuild, and kept by it
        sentence = planted_documents()[0].text.split(". ")[1]
        hits = Retriever(kb).search(sentence, 3)
        assert sentence in hits[0].text  # whole sentences now sit in one chunk
    finally:
        kb.close()
    try:  # the CLI: the applied configuration is now the current one
        assert main(["evaluate", "tune", "--kb", "Planted", "--budget", "0.001", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["current"]["config"] == {"embedder": "minilm", "chunk_tokens": 64,
                                            "overlap_tokens": 0, "hybrid_weight": 0.25}
        assert out["stopped_by_budget"] and out["current"]["ndcg_at_10"] > 0.9
        assert main(["evaluate", "tune", "--kb", "Planted", "--budget", "-5"]) != 0
        assert "budget must be a positive" in capsys.readouterr().err
    finally:
        close_stores()


def test_an_embedder_that_cannot_run_is_left_out_with_a_note(minilm_embedder):
    current = Config("minilm", 64, 0, 0.5)
    missing = Config("/no/such/model.gguf", 64, 0, 0.5)
    loaders = {"minilm": lambda: minilm_embedder,
               missing.embedder: lambda: make_embedder(missing.embedder)}
    result = tune(planted_documents(n_docs=2), loaders, current, configs=[current, missing])
    assert result.best == result.current
    assert [n for n in result.notes if "model.gguf was left out" in n and "no GGUF file" in n]


def test_a_cancel_from_the_progress_callback_stops_the_search():
    from core.errors import Cancelled

    def stop(_fraction: float, _text: str) -> None:
        raise Cancelled("stopped")

    current = Config("minilm", 64, 0, 0.5)
    never = {"minilm": lambda: pytest.fail("a cancelled search must not load a model")}
    with pytest.raises(Cancelled):
        tune(planted_documents(), never, current, configs=[current], progress=stop)


def test_a_cancelled_apply_leaves_the_old_index_serving(tmp_path: Path, minilm_embedder):
    """Stop during the re-index: the old chunking still serves, whole; what was already set
    (the keyword weight) is named in the message."""
    from core.config import Settings
    from core.errors import Cancelled
    from core.evaluate.tune_kb import apply_best, tune_kb
    from core.rag.chunker import ChunkParams
    from core.rag.indexing import index_paths
    from core.rag.knowledge_base import create_kb, open_kb
    from core.rag.store import close_stores

    folder = tmp_path / "docs"
    folder.mkdir()
    for doc in planted_documents():
        (folder / Path(doc.source).name).write_text(doc.text, encoding="utf-8")
    settings = Settings()
    kb = create_kb("Planted", settings=settings, params=ChunkParams(32, 0))
    try:
        index_paths(kb, [folder])
        chunks = kb.info().chunks
        result = tune_kb(kb, budget_s=600, configs=[Config("minilm", 64, 0, 0.25)])

        def stop(_fraction: float | None, text: str) -> None:
            if text.startswith("re-indexing"):
                raise Cancelled("stopped")

        with pytest.raises(Cancelled) as stopped:
            apply_best(kb, result, progress=stop)
        assert "keeps its chunking and embedder" in str(stopped.value)
        assert "hybrid weight 0.25" in str(stopped.value)
    finally:
        kb.close()
    kb = open_kb("Planted", settings=settings)
    try:
        assert kb.params.chunk_tokens == 32 and kb.info().chunks == chunks
        assert kb.hybrid_weight == 0.25  # set before the re-index, as the message says
    finally:
        kb.close()
        close_stores()
