"""The standard and fast MiniLM score within 0.01 of each other on 300+ known-item queries.

Costs one OpenVINO export of MiniLM ('fast', ~10-15 s, once per session in its own cache
folder) and embedding 40 chunks and 300 queries twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.evaluate.contestants import EmbedderContestant
from core.evaluate.dataset import EvaluationSet, known_item_queries
from core.evaluate.run import evaluate
from tests.core.test_evaluate_run import chunked, topical_documents
from tests.fixtures.documents import minilm_embedder

__all__ = ["minilm_embedder"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("openvino", reason="the fast mode needs OpenVINO (pip install corral[fast])")
    from core.rag.encoding import MINILM_NAME, minilm_path
    from core.rag.fast_embedder import make_fast_embedder

    root: Path = tmp_path_factory.mktemp("evaluate-fast-cache")
    return make_fast_embedder(minilm_path(), "fast", name=MINILM_NAME, spec="minilm", root=root)


def test_standard_and_fast_modes_score_within_a_hundredth(minilm_embedder, fast):
    docs = topical_documents(n_docs=10, sentences=32)
    queries = known_item_queries(((s, 0, t) for s, t in docs.items()), 300)
    assert len(queries) == 300
    data = EvaluationSet(chunked(docs, per_chunk=8), queries)
    result = evaluate(data, [EmbedderContestant("minilm", lambda: minilm_embedder),
                             EmbedderContestant("minilm:fast", lambda: fast)])
    standard, quick = result.score("minilm"), result.score("minilm:fast")
    assert not standard.error and not quick.error
    assert standard.ndcg_at_10 > 0.3  # a real task, not a floor both sit on
    for metric in ("ndcg_at_10", "recall_at_10", "mrr_at_10", "rerank_map", "pair_ap",
                   "v_measure"):
        assert getattr(quick, metric) == pytest.approx(getattr(standard, metric), abs=0.01), metric
