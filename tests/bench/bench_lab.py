"""Benchmarks of the embedding lab (a script: it prints, it asserts nothing).

1. The co-occurrence matrix of a 1M-token text (window 10, 1/distance weights) built by
   Corral (from the sentences: vocabulary, ids, counts) vs a numpy/scipy.sparse floor doing
   the same work (np.unique for the ids, one COO sum); target ratio >= 0.5x.
2. word2vec epochs per second through Corral (one train call per epoch, progress and cancel
   checks) vs gensim's Word2Vec called directly on the same sentences; target >= 0.95x.
3. GloVe seconds per epoch on the same 1M tokens (reported).

Run: python tests/bench/bench_lab.py [TOKENS]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
WINDOW = 10


def make_text(tokens: int, vocab: int = 30000, seed: int = 0) -> list[list[str]]:
    """Zipf-distributed words in sentences of 5 to 35 words."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab + 1)
    p = 1.0 / ranks
    p /= p.sum()
    ids = rng.choice(vocab, size=tokens, p=p)
    names = np.array([f"w{i}" for i in range(vocab)])
    words = names[ids].tolist()
    out, at = [], 0
    while at < tokens:
        n = int(rng.integers(5, 36))
        out.append(words[at:at + n])
        at += n
    return out


def floor_cooccurrence(sentences: list[list[str]], window: int):
    """The floor: ids from np.unique, pairs per distance with numpy, one scipy.sparse sum."""
    from scipy import sparse

    flat = np.array([w for s in sentences for w in s])
    sent = np.repeat(np.arange(len(sentences)), [len(s) for s in sentences])
    _words, ids = np.unique(flat, return_inverse=True)
    ids = ids.astype(np.int32)
    size = len(_words)
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
        same = sent[:-d] == sent[d:]
        rows.append(ids[:-d][same])
        cols.append(ids[d:][same])
        vals.append(np.full(len(rows[-1]), 1.0 / d))
    ahead = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(size, size)).tocsr()
    return (ahead + ahead.T).tocsr()


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_cooccurrence(sentences: list[list[str]]) -> None:
    from core.lab.cooccur import cooccurrence, vocabulary

    def corral() -> None:
        cooccurrence(sentences, vocabulary(sentences), WINDOW)

    ours = cooccurrence(sentences, vocabulary(sentences), WINDOW)
    floor = floor_cooccurrence(sentences, WINDOW)
    assert ours.nnz == floor.nnz and abs(ours.sum() - floor.sum()) < 1e-6 * floor.sum()
    t_corral = best_of(3, corral)
    t_floor = best_of(3, lambda: floor_cooccurrence(sentences, WINDOW))
    print(f"co-occurrence, window {WINDOW}: {ours.shape[0]:,} words, {ours.nnz:,} nonzeros")
    print(f"  Corral {t_corral:.3f} s, numpy/scipy floor {t_floor:.3f} s, "
          f"ratio {t_floor / t_corral:.2f}x (target >= 0.5x)")


def bench_word2vec(sentences: list[list[str]], epochs: int = 3) -> None:
    from gensim.models import Word2Vec

    from core.lab.word2vec import train_word2vec

    workers = max(1, min(4, os.cpu_count() or 1))
    params = {"vector_size": 100, "window": 5, "min_count": 5, "workers": workers, "seed": 0}

    def corral() -> None:
        train_word2vec(sentences, dim=100, window=5, min_count=5, workers=workers, epochs=epochs,
                       progress=lambda f, t: None, cancelled=lambda: False)

    def direct() -> None:
        Word2Vec(sentences, epochs=epochs, **params)

    t_corral = best_of(2, corral)
    t_direct = best_of(2, direct)
    print(f"word2vec (CBOW, 100 dims, {workers} workers, {epochs} epochs, vocabulary included):")
    print(f"  Corral {epochs / t_corral:.2f} epochs/s, gensim directly {epochs / t_direct:.2f} "
          f"epochs/s, ratio {t_direct / t_corral:.2f}x (target >= 0.95x)")


def bench_glove(sentences: list[list[str]], epochs: int = 3) -> None:
    from core.lab.glove import train_glove

    t0 = time.perf_counter()
    seen: list[float] = []
    tv = train_glove(sentences, dim=50, window=WINDOW, min_count=5, epochs=epochs,
                     progress=lambda f, t: seen.append(time.perf_counter()))
    total = time.perf_counter() - t0
    print(f"GloVe (50 dims, window {WINDOW}, min count 5, {len(tv.keyed):,} words): "
          f"{total:.1f} s for {epochs} epochs, counts included; cost {tv.losses}")
    first = seen[0] - t0  # vocabulary and counts, before the first epoch
    print(f"  {(total - first) / epochs:.2f} s per epoch (counting took {first:.2f} s)")


def main(tokens: int = 1_000_000) -> None:
    t0 = time.perf_counter()
    sentences = make_text(tokens)
    print(f"text: {sum(map(len, sentences)):,} tokens in {len(sentences):,} sentences "
          f"(made in {time.perf_counter() - t0:.1f} s)")
    bench_cooccurrence(sentences)
    bench_word2vec(sentences)
    bench_glove(sentences)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
