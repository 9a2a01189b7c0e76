"""Evaluation benchmark (issue 17), printed as a ratio against the raw library. Not run in CI.

    python tests/bench/bench_evaluate.py [--chunks 1000] [--queries 300] [--repeat 2]

Evaluating MiniLM on N chunks (every task: retrieval, BM25-top-20 reranking, clustering, pair
classification; and the costs) vs the raw work it cannot avoid: SentenceTransformer.encode of
the N chunks and of the queries, plus one matrix product for the searches (target <= 1.2x).
A full `corral evaluate embedders` run (the three baselines as well) is timed too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.core.test_evaluate_run import chunked, topical_documents  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs each")
    args = parser.parse_args()

    import numpy as np
    from sentence_transformers import SentenceTransformer

    from core.evaluate.contestants import EmbedderContestant, contestants
    from core.evaluate.dataset import EvaluationSet, known_item_queries
    from core.evaluate.run import evaluate
    from core.rag.embedder import make_embedder, minilm_path

    per_chunk = 5
    n_docs = max(2, args.chunks // 10)
    docs = topical_documents(n_docs=n_docs, sentences=10 * per_chunk)
    corpus = chunked(docs, per_chunk)[: args.chunks]
    kept = {p.source for p in corpus}
    queries = known_item_queries(((s, 0, t) for s, t in docs.items() if s in kept),
                                 args.queries)
    data = EvaluationSet(corpus, queries)
    texts, asked = [p.text for p in corpus], [q.text for q in queries]
    print(f"{len(corpus)} chunks of {len(kept)} documents, {len(queries)} queries")

    raw = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    raw.encode(["warm up"])
    emb = make_embedder("minilm")
    emb.embed(["warm up"])

    def raw_work() -> float:
        started = time.perf_counter()
        chunks = raw.encode(texts, batch_size=32, normalize_embeddings=True)
        found = raw.encode(asked, batch_size=32, normalize_embeddings=True) @ np.asarray(chunks).T
        assert found.shape == (len(asked), len(texts))
        return time.perf_counter() - started

    def evaluation(names: list[str] | None) -> float:
        entrants = ([EmbedderContestant("minilm", lambda: emb)] if names is None
                    else contestants(names))
        started = time.perf_counter()
        evaluate(data, entrants)
        return time.perf_counter() - started

    raw_s = ours_s = full_s = float("inf")
    for _ in range(args.repeat):  # interleaved, so a noisy neighbour hits both
        raw_s = min(raw_s, raw_work())
        ours_s = min(ours_s, evaluation(None))
    full_s = evaluation(["minilm"])
    print(f"raw encode chunks + queries + search: {raw_s:7.2f} s")
    print(f"evaluate MiniLM (every task):        {ours_s:7.2f} s")
    print(f"ratio: {ours_s / raw_s:.2f}x (target <= 1.2x)")
    print(f"with the bm25, tfidf and random baselines: {full_s:.2f} s "
          f"({full_s / raw_s:.2f}x the raw work)")


if __name__ == "__main__":
    main()
