"""Evaluate contestants on an evaluation set: every task, every cost, one row each.

Each contestant embeds the corpus once; retrieval, reranking, clustering and pair
classification all reuse those vectors, so an evaluation costs little more than embedding
the chunks and the queries.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import Cancelled, CorralError
from core.evaluate import metrics
from core.evaluate.contestants import (
    Bm25Contestant,
    Contestant,
    Progress,
    contestants,
    row_cosines,
)
from core.evaluate.dataset import N_QUERIES, SEED, EvaluationSet, from_kb
from core.evaluate.questions import N_QUESTIONS, written_questions
from core.evaluate.results import EvaluationResult, Score, recommend, save_last

if TYPE_CHECKING:
    from core.rag.knowledge_base import KnowledgeBase


def _quiet(_fraction: float, _text: str) -> None:
    return None


def evaluate(data: EvaluationSet, entrants: Sequence[Contestant], *,
             progress: Progress = _quiet, kb: str = "") -> EvaluationResult:
    """Score each contestant on ``data``; ``progress`` may raise Cancelled to stop."""
    started = time.perf_counter()
    texts = [p.text for p in data.corpus]
    asked = [q.text for q in data.queries]
    relevance = data.relevance()
    progress(0.0, "BM25: finding the candidates to rerank")
    bm25 = Bm25Contestant()
    try:
        bm25.fit(texts)
        bm25_scores = bm25.scores(asked)
    finally:
        bm25.close()
    order = metrics.top(bm25_scores, metrics.RERANK_DEPTH)
    candidates = [row[bm25_scores[q, row] > 0] for q, row in enumerate(order)]
    scores: list[Score] = []
    share = 1.0 / max(1, len(entrants))
    for n, entrant in enumerate(entrants):
        def step(fraction: float, text: str, n: int = n) -> None:
            progress((n + max(0.0, fraction) * 0.9) * share, text)

        step(0.0, f"{entrant.name}: loading")
        try:
            scores.append(_score(entrant, data, texts, asked, relevance, candidates, step))
        except Cancelled:
            raise
        except CorralError as exc:
            scores.append(Score(entrant.name, entrant.kind, error=exc.sentence()))
        finally:
            entrant.close()
    pick, reason = recommend(scores)
    progress(1.0, "done")
    notes = list(data.notes)
    if len(data.documents) < 2 or len(data.corpus) <= len(data.documents):
        notes.append("clustering and pair classification need at least two documents and "
                     "more chunks than documents")
    notes += [f"{s.name}: {s.error}" for s in scores if s.error]
    labelled = sum(1 for q in data.queries if q.labels)
    return EvaluationResult(
        kb=kb, created=time.time(), seed=data.seed, documents=len(data.documents),
        chunks=len(data.corpus), queries=len(data.queries), labelled_queries=labelled,
        sts_pairs=len(data.sts), scores=scores, recommendation=pick, reason=reason,
        notes=notes, elapsed_s=time.perf_counter() - started)


def _score(entrant: Contestant, data: EvaluationSet, texts: list[str], asked: list[str],
           relevance: np.ndarray, candidates: list[np.ndarray], step: Progress) -> Score:
    entrant.fit(texts, step)
    step(1.0, f"{entrant.name}: searching")
    started = time.perf_counter()
    found = entrant.scores(asked)
    query_s = time.perf_counter() - started
    score = Score(
        entrant.name, entrant.kind,
        ndcg_at_10=metrics.ndcg_at(relevance, found), recall_at_10=metrics.recall_at(relevance, found),
        mrr_at_10=metrics.mrr_at(relevance, found),
        rerank_map=metrics.rerank_map(relevance, candidates, found),
        dimensions=entrant.dimensions, max_tokens=entrant.max_tokens,
        index_bytes=entrant.index_bytes,
        chunks_per_s=len(texts) / entrant.fit_seconds if entrant.fit_seconds > 0 else 0.0,
        query_ms=1000.0 * query_s / max(1, len(asked)))
    vectors = entrant.vectors
    if vectors is not None:
        step(1.0, f"{entrant.name}: clustering")
        sample = data.cluster_sample()
        score.v_measure = metrics.v_measure(vectors[sample], data.document_labels()[sample])
        first, second, same = data.chunk_pairs()
        if len(same):
            score.pair_ap = metrics.pair_ap(row_cosines(vectors[first], vectors[second]), same)
        if data.sts:
            a = entrant.embed([p[0] for p in data.sts])
            b = entrant.embed([p[1] for p in data.sts])
            score.sts_spearman = metrics.spearman(row_cosines(a, b),
                                                  np.array([p[2] for p in data.sts]))
    return score


def evaluate_kb(kb: KnowledgeBase, names: Sequence[str] = (), *, labelled: Path | None = None,
                sts: Path | None = None, chat_model: Path | None = None,
                n_questions: int = N_QUESTIONS, n_queries: int = N_QUERIES, seed: int = SEED,
                progress: Progress = _quiet, store: bool = True) -> EvaluationResult:
    """Evaluate ``names`` (default: the knowledge base's own embedder) and the three
    baselines on the knowledge base's documents; the result is stored with it.
    ``chat_model``: a chat GGUF that also writes ``n_questions`` questions about chunks."""
    progress(0.0, "reading the chunks")
    data = from_kb(kb, n_queries=n_queries, seed=seed, labelled=labelled, sts=sts)
    if chat_model is not None:
        written = written_questions(chat_model, data.corpus, n=n_questions, seed=seed,
                                    progress=progress)
        data.queries += written
        data.notes.append(f"{len(written)} of the labelled queries are questions "
                          f"{Path(chat_model).name} wrote about chunks")
    own = kb.embedder_spec + ("" if kb.mode == "standard" else f":{kb.mode}")
    wanted = [n.strip() for n in names if n.strip()] or [own]
    entrants = contestants(wanted, seed=seed, ollama=kb.ollama)
    result = evaluate(data, entrants, progress=progress, kb=kb.name)
    if store:
        save_last(kb, result)
    return result

