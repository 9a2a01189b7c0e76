"""Auto-tune retrieval: successive halving over chunk size x overlap x embedder x hybrid
weight, within a time budget, maximising nDCG@10 on known-item queries; then top-k, the
smallest k whose recall is within 0.02 of recall@20.

The documents are re-chunked in memory (the knowledge base is never touched): rung r scores
the surviving configurations on a growing, seeded share of the documents and keeps the best
third; the current configuration is always kept, so the report compares like with like.
Hybrid search is scored as the retriever fuses it: weighted reciprocal ranks of the vector
and BM25 sides.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.errors import Cancelled, CorralError
from core.evaluate import metrics
from core.evaluate.contestants import Bm25Contestant, Progress
from core.evaluate.dataset import SEED, Passage, Query, known_item_queries, relevance
from core.rag.chunker import Chunker, ChunkParams
from core.rag.document import UNIT_SEPARATOR, TextUnit
from core.rag.embedder import Embedder
from core.rag.retriever import DEPTH, MIN_DEPTH, RRF_K
from core.rag.retriever import _weights as fusion_weights

CHUNK_TOKENS = (64, 128, 256)
OVERLAPS = (0, 32)
HYBRID_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
ETA = 3
N_QUERIES = 200
BUDGET_S = 300.0
TOP_K_SLACK = 0.02


def _quiet(_fraction: float, _text: str) -> None:
    return None


@dataclass(frozen=True)
class Config:
    embedder: str  # an embedder name: 'minilm', 'minilm:fast', 'ollama:NAME' ...
    chunk_tokens: int
    overlap_tokens: int
    hybrid_weight: float

    def label(self) -> str:
        return (f"{self.embedder}, {self.chunk_tokens} tokens, overlap {self.overlap_tokens}, "
                f"hybrid weight {self.hybrid_weight:g}")


@dataclass
class Trial:
    config: Config
    rung: int
    documents: int
    queries: int
    ndcg_at_10: float
    recall_at_10: float


@dataclass
class TuneResult:
    kb: str
    created: float
    seed: int
    budget_s: float
    elapsed_s: float
    best: Trial
    current: Trial
    top_k: int
    recall_at_k: float
    recall_at_20: float
    rungs: int
    stopped_by_budget: bool
    trials: list[Trial] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    applied: str = ""

    @property
    def gain(self) -> float:
        return self.best.ndcg_at_10 - self.current.ndcg_at_10

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TuneResult:
        def trial(t: dict[str, Any]) -> Trial:
            return Trial(**{**t, "config": Config(**t["config"])})

        return cls(**{**raw, "best": trial(raw["best"]), "current": trial(raw["current"]),
                      "trials": [trial(t) for t in raw["trials"]]})


@dataclass
class Document:
    source: str
    units: list[TextUnit]

    @property
    def text(self) -> str:
        return UNIT_SEPARATOR.join(u.text for u in self.units)


def grid(embedders: Sequence[str], chunk_tokens: Sequence[int] = CHUNK_TOKENS,
         overlaps: Sequence[int] = OVERLAPS, weights: Sequence[float] = HYBRID_WEIGHTS
         ) -> list[Config]:
    """Every valid combination (an overlap of at most half the chunk)."""
    return [Config(e, c, o, w) for e in embedders for c in chunk_tokens for o in overlaps
            if o <= c // 2 for w in weights]


class Tuner:
    """One search. ``embedders``: name -> a function that loads it (in this process)."""

    def __init__(self, documents: Sequence[Document], embedders: dict[str, Callable[[], Embedder]],
                 configs: Sequence[Config], current: Config, *, seed: int = SEED,
                 n_queries: int = N_QUERIES, budget_s: float = BUDGET_S,
                 progress: Progress = _quiet) -> None:
        self.documents = sorted(documents, key=lambda d: d.source)
        self.loaders = embedders
        self.current = current
        self.configs = [current] + [c for c in dict.fromkeys(configs) if c != current]
        self.seed = seed
        self.budget_s = budget_s
        self.progress = progress
        self.notes: list[str] = []
        self.queries = known_item_queries(((d.source, 0, d.text) for d in self.documents),
                                          n_queries, seed)
        if not self.queries:
            raise CorralError("the documents have no sentences to use as queries")
        self._embedders: dict[str, Embedder] = {}
        self._query_vectors: dict[str, np.ndarray] = {}
        self._chunks: dict[tuple[str, int, int, str], tuple[list[Passage], np.ndarray]] = {}
        self._sides: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._fraction = 0.0
        self._best_docs: list[Document] = []

    # --- one configuration on some documents -------------------------------------------------

    def _embedder(self, name: str) -> Embedder:
        if name not in self._embedders:
            if name not in self.loaders:
                raise CorralError(f"no embedder called {name!r} was given to the search")
            self._embedders[name] = self.loaders[name]()
        return self._embedders[name]

    def _chunked(self, name: str, params: ChunkParams, doc: Document, say: str
                 ) -> tuple[list[Passage], np.ndarray]:
        key = (name, params.chunk_tokens, params.overlap_tokens, doc.source)
        if key not in self._chunks:
            self.progress(self._fraction, say)
            emb = self._embedder(name)
            chunks = [Passage(f"{doc.source}#{c.index}", c.text, doc.source, c.start, c.end)
                      for c in Chunker(emb, params).iter_chunks(doc.units)]
            vectors = np.asarray(emb.embed([c.text for c in chunks]), dtype=np.float32)
            self._chunks[key] = chunks, vectors.reshape(len(chunks), -1)
        return self._chunks[key]

    def _sides_of(self, config: Config, docs: list[Document], queries: list[Query]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(relevance, vector scores, BM25 scores) of the queries over the chunks of ``docs``
        cut with ``config``'s chunking (the hybrid weight does not change them)."""
        key = (config.embedder, config.chunk_tokens, config.overlap_tokens, len(docs))
        if key not in self._sides:
            params = ChunkParams(config.chunk_tokens, config.overlap_tokens).validate()
            corpus: list[Passage] = []
            vectors = []
            for n, doc in enumerate(docs):
                chunks, vecs = self._chunked(config.embedder, params, doc, (
                    f"{config.embedder}, {config.chunk_tokens} tokens, overlap "
                    f"{config.overlap_tokens}: chunking and embedding document {n + 1} of "
                    f"{len(docs)}"))
                corpus += chunks
                vectors.append(vecs)
            if config.embedder not in self._query_vectors:
                emb = self._embedder(config.embedder)
                self._query_vectors[config.embedder] = np.asarray(
                    emb.embed([q.text for q in self.queries]), dtype=np.float32)
            wanted = {d.source for d in docs}
            rows = [i for i, q in enumerate(self.queries) if q.source in wanted]
            vector = self._query_vectors[config.embedder][rows] @ np.concatenate(vectors).T
            bm25 = Bm25Contestant()
            try:
                bm25.fit([p.text for p in corpus])
                keyword = bm25.scores([q.text for q in queries])
            finally:
                bm25.close()
            self._sides[key] = relevance(queries, corpus), vector.astype(np.float64), keyword
        return self._sides[key]

    def scores(self, config: Config, docs: list[Document]) -> tuple[np.ndarray, np.ndarray]:
        """(relevance, fused scores) of the queries of ``docs`` under ``config``."""
        wanted = {d.source for d in docs}
        queries = [q for q in self.queries if q.source in wanted]
        rel, vector, keyword = self._sides_of(config, docs, queries)
        return rel, fuse(vector, keyword, config.hybrid_weight)

    def trial(self, config: Config, rung: int, docs: list[Document]) -> Trial:
        rel, fused = self.scores(config, docs)
        return Trial(config, rung, len(docs), rel.shape[0], metrics.ndcg_at(rel, fused),
                     metrics.recall_at(rel, fused))

    # --- the search -----------------------------------------------------------------------

    def run(self) -> tuple[Trial, Trial, list[Trial], int, bool]:
        """(best, current, every trial, rungs, stopped by the budget) of the search."""
        started = time.monotonic()
        order = list(self.documents)
        random.Random(self.seed).shuffle(order)
        n_rungs = 1 + int(math.log(len(self.configs), ETA)) if len(self.configs) > 1 else 1
        sizes = [max(min(2, len(order)), math.ceil(len(order) / ETA ** (n_rungs - 1 - r)))
                 for r in range(n_rungs)]
        planned = sum(max(1, math.ceil(len(self.configs) / ETA ** r)) for r in range(n_rungs))
        survivors = list(self.configs)
        trials: list[Trial] = []
        finished: list[Trial] = []  # the last rung every survivor was scored on
        stopped = False
        failed: set[str] = set()  # embedders that cannot run here
        for rung, size in enumerate(sizes):
            docs = order[:size]
            this: list[Trial] = []
            for config in survivors:
                if config.embedder in failed:
                    continue
                if this and time.monotonic() - started > self.budget_s:
                    stopped = True
                    break
                self._fraction = min(0.99, len(trials) / planned)
                self.progress(self._fraction, f"rung {rung + 1} of {n_rungs}: {config.label()}")
                try:
                    this.append(self.trial(config, rung, docs))
                except Cancelled:
                    raise
                except CorralError as exc:  # an embedder that cannot run here: drop it
                    if config.embedder == self.current.embedder:
                        raise
                    self.notes.append(f"{config.embedder} was left out: {exc.sentence()}")
                    failed.add(config.embedder)
                    continue
                trials.append(this[-1])
            if stopped and finished:
                break
            finished = this
            if stopped:
                break
            ranked = sorted(this, key=lambda t: -t.ndcg_at_10)  # stable: earlier wins ties
            keep = max(1, math.ceil(len(ranked) / ETA))
            survivors = [t.config for t in ranked[:keep]]
            if self.current not in survivors:
                survivors.insert(0, self.current)
            else:
                survivors.remove(self.current)
                survivors.insert(0, self.current)
        best = max(finished, key=lambda t: t.ndcg_at_10)  # max keeps the first of equals
        current = next(t for t in finished if t.config == self.current)
        if best.ndcg_at_10 <= current.ndcg_at_10:
            best = current
        self._best_docs = order[:best.documents]
        return best, current, trials, n_rungs, stopped

    def top_k(self, best: Trial) -> tuple[int, float, float]:
        """(k, recall@k, recall@20): the smallest k within TOP_K_SLACK of recall@20."""
        rel, fused = self.scores(best.config, self._best_docs)
        at_20 = metrics.recall_at(rel, fused, 20)
        for k in range(1, 21):
            got = metrics.recall_at(rel, fused, k)
            if got >= at_20 - TOP_K_SLACK:
                return k, got, at_20
        return 20, at_20, at_20


def fuse(vector: np.ndarray, keyword: np.ndarray, hybrid_weight: float) -> np.ndarray:
    """Weighted reciprocal-rank fusion, as the retriever does it: each side's best
    max(DEPTH * 10, MIN_DEPTH) chunks count w / (RRF_K + rank); the rest score 0."""
    w_vec, w_kw = fusion_weights("hybrid", hybrid_weight)
    depth = max(metrics.K * DEPTH, MIN_DEPTH)
    fused = np.zeros_like(vector)
    for scores, weight, floor in ((vector, w_vec, -np.inf), (keyword, w_kw, 0.0)):
        if weight == 0:
            continue
        best = metrics.top(scores, depth)
        ranks = np.arange(1, best.shape[1] + 1, dtype=np.float64)
        gains = np.where(np.take_along_axis(scores, best, 1) > floor,
                         weight / (RRF_K + ranks), 0.0)
        np.put_along_axis(fused, best, np.take_along_axis(fused, best, 1) + gains, axis=1)
    # ties (chunks neither side ranked) stay behind every ranked one: a tiny vector share
    out: np.ndarray = fused + 1e-9 * np.clip(vector, -1.0, 1.0)
    return out


def tune(documents: Sequence[Document], embedders: dict[str, Callable[[], Embedder]],
         current: Config, *, configs: Sequence[Config] | None = None, kb: str = "",
         seed: int = SEED, n_queries: int = N_QUERIES, budget_s: float = BUDGET_S,
         progress: Progress = _quiet) -> TuneResult:
    """Search ``configs`` (default: the grid over ``embedders``) on ``documents``."""
    started = time.monotonic()
    if not documents:
        raise CorralError("there are no readable documents to tune on")
    tuner = Tuner(documents, embedders, configs or grid(list(embedders)), current, seed=seed,
                  n_queries=n_queries, budget_s=budget_s, progress=progress)
    best, now, trials, rungs, stopped = tuner.run()
    k, recall_k, recall_20 = tuner.top_k(best)
    progress(1.0, "done")
    notes = list(tuner.notes)
    if stopped:
        notes.append(f"the budget of {budget_s:g} s ran out before the last rung; the best is "
                     f"from {best.documents} of {len(documents)} documents")
    return TuneResult(kb=kb, created=time.time(), seed=seed, budget_s=budget_s,
                      elapsed_s=time.monotonic() - started, best=best, current=now, top_k=k,
                      recall_at_k=recall_k, recall_at_20=recall_20, rungs=rungs,
                      stopped_by_budget=stopped, trials=trials, notes=notes)

