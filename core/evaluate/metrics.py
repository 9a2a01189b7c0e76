"""The task definitions, fixed (they follow MTEB's), with scikit-learn and scipy doing the
arithmetic.

- Retrieval: nDCG@10 (graded), recall@10 and MRR@10, averaged over queries; a query that no
  chunk answers scores 0.
- Clustering: k-means with k = the number of documents and seed 0; V-measure against the
  chunks' documents.
- Pair classification (same document or not): average precision of the cosine.
- STS: Spearman's rank correlation of the cosine with the given scores.
- Reranking: MAP of the contestant's order of BM25's top 20 (queries whose top 20 holds no
  relevant chunk are left out, as in MTEB).
"""

from __future__ import annotations

from typing import Any

import numpy as np

K = 10
RERANK_DEPTH = 20


def top(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` best columns, best first (ties: the earlier column)."""
    k = min(k, scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def ndcg_at(relevance: np.ndarray, scores: np.ndarray, k: int = K) -> float:
    from sklearn.metrics import ndcg_score

    if relevance.shape[1] < 2:  # scikit-learn needs two candidates; one is always first
        return float(np.mean(relevance[:, 0] > 0))
    return float(ndcg_score(relevance, scores, k=k))


def recall_at(relevance: np.ndarray, scores: np.ndarray, k: int = K) -> float:
    """Per query: the share of its relevant chunks among the top ``k``; averaged."""
    from sklearn.metrics import recall_score

    found = np.zeros(relevance.shape, dtype=np.int64)
    np.put_along_axis(found, top(scores, k), 1, axis=1)
    truth = (relevance > 0).astype(np.int64)
    if truth.shape[1] < 2:
        return float(np.mean(truth[:, 0] & found[:, 0]))
    return float(recall_score(truth, found, average="samples", zero_division=0))


def mrr_at(relevance: np.ndarray, scores: np.ndarray, k: int = K) -> float:
    """Mean of 1/rank of the first relevant chunk in the top ``k`` (0 when none is).
    scikit-learn has no MRR; this is its whole definition."""
    hits = np.take_along_axis(relevance > 0, top(scores, k), axis=1)
    first = np.argmax(hits, axis=1)
    reciprocal = np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)
    return float(reciprocal.mean()) if len(reciprocal) else 0.0


def v_measure(vectors: Any, labels: np.ndarray, n_init: int = 1) -> float | None:
    """k-means (k = the number of documents, seed 0) of the chunks against their documents."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import v_measure_score

    k = len(set(labels.tolist()))
    if k < 2 or vectors.shape[0] <= k:
        return None
    predicted = KMeans(n_clusters=k, random_state=0, n_init=n_init).fit_predict(vectors)
    return float(v_measure_score(labels, predicted))


def pair_ap(cosines: np.ndarray, same: np.ndarray) -> float | None:
    from sklearn.metrics import average_precision_score

    if len(set(same.tolist())) < 2:
        return None
    return float(average_precision_score(same, cosines))


def spearman(cosines: np.ndarray, gold: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(gold) < 2 or np.ptp(gold) == 0 or np.ptp(cosines) == 0:
        return None
    return float(spearmanr(cosines, gold).statistic)


def rerank_map(relevance: np.ndarray, candidates: list[np.ndarray], scores: np.ndarray
               ) -> float | None:
    """MAP of ``scores``' order of each query's ``candidates`` (BM25's top 20).

    Per query, scikit-learn's label-ranking average precision over its candidates is the
    average precision of that order (ties counted against it); padding sorts last."""
    from sklearn.metrics import label_ranking_average_precision_score

    rows = [q for q, cand in enumerate(candidates) if (relevance[q, cand] > 0).any()]
    if not rows:
        return None
    width = max(len(candidates[q]) for q in rows)
    truth = np.zeros((len(rows), width), dtype=np.int64)
    order = np.zeros((len(rows), width), dtype=np.float64)
    for r, q in enumerate(rows):
        cand = candidates[q]
        got = scores[q, cand]
        truth[r, :len(cand)] = relevance[q, cand] > 0
        order[r, :len(cand)] = got
        order[r, len(cand):] = (got.min() if len(got) else 0.0) - 1.0
    return float(label_ranking_average_precision_score(truth, order))
