"""Every metric of an evaluation, on a corpus small enough to work out by hand.

Four chunks in two documents, a contestant whose vectors are fixed, three known-item queries
(one straddles two chunks, so no chunk answers it). The expected numbers are computed in the
comments from the definitions, not by the code under test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from core.evaluate.contestants import Contestant
from core.evaluate.dataset import EvaluationSet, Passage, Query
from core.evaluate.metrics import mrr_at, ndcg_at, recall_at
from core.evaluate.run import evaluate

A = "pear orchard north field green pear fruit ripens slowly"
B = "blue river stone bridge river mouth sea harbor"
C0, C1 = A[:24], A[25:]  # "pear orchard north field" | "green pear fruit ripens slowly"
C2, C3 = B[:23], B[24:]  # "blue river stone bridge" | "river mouth sea harbor"
CORPUS = [Passage("c0", C0, "a.txt", 0, 24), Passage("c1", C1, "a.txt", 25, len(A)),
          Passage("c2", C2, "b.txt", 0, 23), Passage("c3", C3, "b.txt", 24, len(B))]
Q0 = Query("green pear fruit ripens", "a.txt", 25, 48)  # answered by c1
Q1 = Query("blue river stone", "b.txt", 0, 16)  # answered by c2
Q2 = Query("field green", "a.txt", 19, 30)  # straddles c0|c1: no chunk holds it
VECTORS = {C0: [1, 0], C1: [0.8, 0.6], C2: [0, 1], C3: [0.28, 0.96],
           Q0.text: [1, 0], Q1.text: [0.6, 0.8], Q2.text: [0, 1]}
STS = [(C0, C1, 3.0), (C0, C2, 1.0), (C2, C3, 2.0)]


class Fixed(Contestant):
    def __init__(self) -> None:
        super().__init__("fixed")
        self.dimensions = 2

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([VECTORS[t] for t in texts], dtype=np.float32)


@pytest.fixture(scope="module")
def score():
    data = EvaluationSet(list(CORPUS), [Q0, Q1, Q2], sts=list(STS))
    assert A[Q0.start:Q0.end] == Q0.text and B[Q1.start:Q1.end] == Q1.text
    assert data.relevance().tolist() == [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    return evaluate(data, [Fixed()]).score("fixed")


def test_retrieval_metrics_equal_the_hand_computed_values(score):
    # cosines q0: c0 1, c1 .8, c2 0, c3 .6 -> c1 at rank 2: nDCG 1/log2(3), RR 1/2
    # cosines q1: c0 .6, c1 .96, c2 .8, c3 .936 -> c2 at rank 3: nDCG 1/log2(4) = .5, RR 1/3
    # q2: nothing relevant -> 0 everywhere; recall@10: 1, 1, 0
    assert score.ndcg_at_10 == pytest.approx((1 / math.log2(3) + 0.5 + 0) / 3)
    assert score.recall_at_10 == pytest.approx(2 / 3)
    assert score.mrr_at_10 == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)


def test_reranking_clustering_pairs_and_sts_equal_the_hand_computed_values(score):
    # BM25's candidates: q0 -> c1 (all words), c0 ("pear"); the contestant puts c0 first,
    # so the relevant c1 is second: AP 1/2. q1 -> c2, c3 ("river"): c3 first, AP 1/2.
    # q2 -> c0 ("field"), c1 ("green"), none relevant: left out. MAP = 1/2.
    assert score.rerank_map == pytest.approx(0.5)
    # k-means, k=2: {c0, c1} and {c2, c3} (SSE .24, any other split > .42) = the documents
    assert score.v_measure == pytest.approx(1.0)
    # all six pairs; cosines: (2,3) .96 same, then (0,1) .8 same and (1,3) .8 different,
    # (1,2) .6, (0,3) .28, (0,2) 0. AP = .5 * 1 (precision at .96) + .5 * 2/3 (at .8) = 5/6
    assert score.pair_ap == pytest.approx(5 / 6)
    # STS cosines .8, 0, .96 rank 2, 1, 3; gold 3, 1, 2 ranks 3, 1, 2: d^2 = 2,
    # Spearman = 1 - 6 * 2 / (3 * 8) = .5
    assert score.sts_spearman == pytest.approx(0.5)


def test_costs_are_reported(score):
    assert score.dimensions == 2
    assert score.index_bytes == 4 * 2 * 4  # four float32 vectors of two dimensions
    assert score.chunks_per_s > 0 and score.query_ms >= 0
    assert score.error == ""


def test_graded_relevance_and_the_cutoff_at_ten():
    scores = np.array([np.arange(20, 0, -1, dtype=float)])  # column i ranks i + 1
    grades = np.zeros((1, 20))
    grades[0, 1], grades[0, 12] = 2.0, 1.0  # ranks 2 and 13: the second is past @10
    dcg = (2 ** 0 * 0 + 2.0 / math.log2(3))  # scikit-learn's linear gain: grade / log2(rank+1)
    ideal = 2.0 / math.log2(2) + 1.0 / math.log2(3)
    assert ndcg_at(grades, scores) == pytest.approx(dcg / ideal)
    assert recall_at(grades, scores) == pytest.approx(0.5)
    assert mrr_at(grades, scores) == pytest.approx(0.5)
