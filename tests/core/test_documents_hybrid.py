"""Hybrid search on a 2,000-chunk knowledge base made of common words: keyword hits reach the
results however common the words, fusion is weighted reciprocal rank, and `corral search`
shows why each chunk came back (--mode, and the scores and ranks under --json)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.config import Settings
from core.rag import retriever as retriever_module
from core.rag.knowledge_base import KnowledgeBase, create_kb, open_kb
from core.rag.retriever import RRF_K, Retriever
from core.rag.store import close_stores, open_store
from tests.core.test_documents_keyword import BOTH, common_corpus
from tests.fixtures.documents import minilm_embedder

__all__ = ["minilm_embedder"]
pytestmark = pytest.mark.slow

N = 2000
ANY = -1.0  # no cosine threshold
DUPLICATE = "Tonewood, tonewood: split spruce tonewood for violin tops."


@pytest.fixture(scope="module")
def common_kb(minilm_embedder, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[KnowledgeBase, Path]]:
    """The knowledge base 'common' in the user's store: the keyword side filled directly and
    random unit vectors on the vector side (so the vector side never finds the keyword
    chunks, and about half of them have a negative cosine to any query: searches here pass
    threshold -1), plus three copies of one text (files dup0..dup2) and two chunks that say
    "tonewood" less often (near0, near1)."""
    texts = common_corpus(N)
    ids = [f"c{i}" for i in range(N)]
    metas = [{"source": f"/docs/f{i // 10}.txt", "file_name": f"f{i // 10}.txt",
              "file_hash": "h", "chunk_index": i % 10} for i in range(N)]
    extra = {"dup0": DUPLICATE, "dup1": DUPLICATE, "dup2": DUPLICATE,
             "near0": "Tonewood from the north: river spruce, split and dried for years.",
             "near1": "Tonewood, cheaper: forest maple for the backs and ribs of cellos."}
    for cid, text in extra.items():
        ids.append(cid)
        texts.append(text)
        metas.append({"source": f"/docs/{cid}.txt", "file_name": f"{cid}.txt", "file_hash": "h",
                      "chunk_index": 0})
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(ids), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    home = tmp_path_factory.mktemp("common-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CORRAL_HOME", str(home))
        store = open_store(Settings())
        kb = create_kb("common", settings=Settings(), store=store)
        store.upsert(kb.collection, ids, vectors, texts, metas).result()
        kb.keywords.upsert(ids, [m["source"] for m in metas], ["h"] * len(ids), texts)
        kb.keywords.refresh()
    yield kb, home
    kb.close()
    close_stores()


@pytest.fixture
def kb(common_kb: tuple[KnowledgeBase, Path], monkeypatch: pytest.MonkeyPatch
       ) -> Iterator[KnowledgeBase]:
    """The module's knowledge base, in the user's data folder (for `corral`), weight 0.5."""
    kb, home = common_kb
    monkeypatch.setenv("CORRAL_HOME", str(home))
    yield kb
    kb.hybrid_weight = 0.5




def test_python_timeout_finds_the_one_chunk_with_both_words(kb: KnowledgeBase) -> None:
    hits = Retriever(kb).search("python timeout", k=5, threshold=ANY)
    both = [h for h in hits if h.id == f"c{BOTH}"]
    assert both, [h.id for h in hits]
    hit = both[0]
    assert hit.keyword_rank == 1 and hit.keyword_score is not None and hit.keyword_score > 0
    assert hit.vector_rank is None and hit.vector_score is None  # the vectors are random
    assert hit.fused_score == pytest.approx(1 / (RRF_K + 1))  # hybrid_weight 0.5: plain RRF
    assert -1.0 <= hit.score <= 1.0  # its cosine, computed from its stored vector


def test_a_query_of_common_words_still_gets_keyword_hits(kb: KnowledgeBase) -> None:
    hybrid = Retriever(kb).search("river mountain forest", k=6, threshold=ANY)
    assert any(h.keyword_rank is not None for h in hybrid)
    keyword = Retriever(kb).search("river mountain forest", k=6, mode="keyword", threshold=ANY)
    assert [h.keyword_rank for h in keyword] == [1, 2, 3, 4, 5, 6]
    assert all(h.vector_rank is None for h in keyword)


def test_fusion_is_reciprocal_rank_weighted_by_the_knowledge_base(kb: KnowledgeBase) -> None:
    retriever = Retriever(kb)
    even = retriever.search("python timeout", k=4, threshold=ANY)
    # at 0.5, the first keyword hit and the nearest vector tie and both make the top two
    assert {h.keyword_rank for h in even[:2]} == {1, None}
    assert {h.vector_rank for h in even[:2]} == {1, None}
    kb.hybrid_weight = 0.8
    leaning = retriever.search("python timeout", k=4, threshold=ANY)
    keyword = retriever.search("python timeout", k=4, mode="keyword", threshold=ANY)
    assert [h.id for h in leaning] == [h.id for h in keyword]  # keyword hits now outrank all
    assert leaning[0].fused_score == pytest.approx(2 * 0.8 / (RRF_K + 1))
    kb.hybrid_weight = 0.0
    assert all(h.keyword_rank is None or h.vector_rank is not None
               for h in retriever.search("python timeout", k=4, threshold=ANY))


def test_keyword_hits_below_collapsed_duplicates_still_reach_the_top_k(kb: KnowledgeBase) -> None:
    kb.hybrid_weight = 1.0  # only keyword ranks count
    hits = Retriever(kb).search("tonewood", k=3, threshold=ANY)
    # three copies of the best match collapse into one; ranks 4 and 5 fill the top 3
    assert [h.keyword_rank for h in hits] == [1, 4, 5]
    assert sorted(h.id for h in hits[1:]) == ["near0", "near1"]


def test_the_keyword_index_is_rebuilt_from_the_texts_chroma_holds(kb: KnowledgeBase) -> None:
    kb.keywords.delete_ids(kb.keywords.ids())  # the cache lost (a new machine, a deleted folder)
    assert Retriever(kb).search("python timeout", k=3, mode="keyword", threshold=ANY) == []
    again = open_kb(kb.name, settings=Settings(), store=kb.store)  # opening checks the caches
    again.close()
    assert kb.keywords.count() == N + 5
    assert kb.rebuild_keywords() == N + 5
    hits = Retriever(kb).search("python timeout", k=3, mode="keyword", threshold=ANY)
    assert hits[0].id == f"c{BOTH}" and hits[0].file_name == f"f{BOTH // 10}.txt"


def test_unknown_mode_is_refused_with_a_hint(kb: KnowledgeBase) -> None:
    from core.errors import CorralError

    with pytest.raises(CorralError, match="unknown search mode 'bm25'"):
        Retriever(kb).search("python", mode="bm25")


def search_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["search", *args, "--kb", "common", "--threshold", "-1", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


FIELDS = {"score", "vector_score", "vector_rank", "keyword_score", "keyword_rank", "fused_score"}


def test_cli_modes_and_the_inspector_fields(kb: KnowledgeBase,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    hybrid = search_json(capsys, "python timeout", "-k", "5")
    assert hybrid["mode"] == "hybrid"
    assert all(set(h) >= FIELDS for h in hybrid["hits"])
    both = next(h for h in hybrid["hits"] if h["id"] == f"c{BOTH}")
    assert both["keyword_rank"] == 1 and both["vector_rank"] is None
    assert both["vector_score"] is None and isinstance(both["score"], float)
    vector_hit = next(h for h in hybrid["hits"] if h["vector_rank"] == 1)
    assert vector_hit["score"] == pytest.approx(vector_hit["vector_score"])

    keyword = search_json(capsys, "python timeout", "--mode", "keyword", "-k", "3")
    assert [h["keyword_rank"] for h in keyword["hits"]] == [1, 2, 3]
    assert keyword["hits"][0]["id"] == f"c{BOTH}"
    assert all(h["vector_rank"] is None and h["vector_score"] is None for h in keyword["hits"])

    vector = search_json(capsys, "python timeout", "--mode", "vector", "-k", "3")
    assert [h["vector_rank"] for h in vector["hits"]] == [1, 2, 3]
    assert all(h["keyword_rank"] is None and h["keyword_score"] is None for h in vector["hits"])
    alias = search_json(capsys, "python timeout", "--vector-only", "-k", "3")
    assert alias["mode"] == "vector"
    assert [h["id"] for h in alias["hits"]] == [h["id"] for h in vector["hits"]]

    assert main(["search", "python", "--kb", "common", "--vector-only", "--mode", "keyword"]) == 1
    assert "--vector-only contradicts --mode keyword" in capsys.readouterr().err


def test_the_cli_offers_the_retrievers_modes() -> None:
    from core.cli import search

    assert search.MODES == retriever_module.MODES
