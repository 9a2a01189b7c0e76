"""Co-occurrence counts as GloVe builds them: a symmetric window over each sentence, each
pair weighted 1/distance, words under the minimum count left out before the window slides
(as the GloVe tool's cooccur does). Built with numpy and a scipy.sparse sum, not a loop."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from core.errors import CorralError


@dataclass
class Vocabulary:
    words: list[str]  # most frequent first (ties alphabetical)
    counts: np.ndarray  # int64, one per word

    def __len__(self) -> int:
        return len(self.words)

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}


def vocabulary(sentences: list[list[str]], min_count: int = 1) -> Vocabulary:
    if min_count < 1:
        raise CorralError("the minimum count must be at least 1")
    counts = Counter(w for s in sentences for w in s)
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if not kept:
        raise CorralError(f"no word occurs {min_count} times or more",
                          hint="Lower the minimum count, or use a longer text.")
    return Vocabulary(kept, np.array([counts[w] for w in kept], dtype=np.int64))


def encode(sentences: list[list[str]], vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """(word ids, sentence number of each) of the words in the vocabulary, in text order."""
    index = vocab.index()
    ids: list[int] = []
    sent: list[int] = []
    for n, s in enumerate(sentences):
        row = [index[w] for w in s if w in index]
        ids.extend(row)
        sent.extend([n] * len(row))
    return np.array(ids, dtype=np.int64), np.array(sent, dtype=np.int64)


def cooccurrence(sentences: list[list[str]], vocab: Vocabulary, window: int = 10
                 ) -> sparse.csr_matrix:
    """X[i, j]: the sum of 1/d over every time word j stands d <= ``window`` words from word i
    in one sentence (both directions, so X is symmetric). float64 CSR, vocabulary order."""
    if window < 1:
        raise CorralError("the window must be at least 1 word")
    ids, sent = encode(sentences, vocab)
    return cooccurrence_of_ids(ids, sent, len(vocab), window)


def cooccurrence_of_ids(ids: np.ndarray, sent: np.ndarray, size: int, window: int
                        ) -> sparse.csr_matrix:
    """The matrix from word ids in text order and their sentence numbers: each pair d <=
    ``window`` apart within a sentence counted once left-to-right (one COO sum), then the
    transpose added for the other direction."""
    index_type = np.int32 if size < 2**31 else np.int64
    ids = ids.astype(index_type, copy=False)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for d in range(1, min(window, max(len(ids) - 1, 0)) + 1):
        same = sent[:-d] == sent[d:]
        rows.append(ids[:-d][same])
        cols.append(ids[d:][same])
        vals.append(np.full(len(rows[-1]), 1.0 / d))
    if not rows:
        return sparse.csr_matrix((size, size), dtype=np.float64)
    ahead = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(size, size)).tocsr()  # (duplicates are summed here)
    matrix: sparse.csr_matrix = (ahead + ahead.T).tocsr()
    matrix.sum_duplicates()
    return matrix
