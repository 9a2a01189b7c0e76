"""One-hot vectors of a short text over a small vocabulary, to contrast with dense embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.analysis.bpe_steps import split_words

UNKNOWN = "[UNK]"


@dataclass(frozen=True)
class OneHot:
    """Row i is the vector of ``tokens[i]``: a single 1 in the column of its vocabulary entry."""

    tokens: list[str]
    vocabulary: list[str]
    matrix: np.ndarray  # (len(tokens), len(vocabulary)), uint8

    def index_of(self, token: str) -> int:
        return self.vocabulary.index(token) if token in self.vocabulary else -1


def one_hot(
    text: str, vocabulary: Sequence[str] | None = None, *, lowercase: bool = True
) -> OneHot:
    """Word-level one-hot vectors; with no vocabulary given, the text's own sorted words.

    Words outside a given vocabulary map to an ``[UNK]`` column added at the end.
    """
    tokens = [w.lower() if lowercase else w for w in split_words(text)]
    vocab = list(vocabulary) if vocabulary is not None else sorted(set(tokens))
    index = {w: i for i, w in enumerate(vocab)}
    if any(t not in index for t in tokens) and UNKNOWN not in index:
        index[UNKNOWN] = len(vocab)
        vocab.append(UNKNOWN)
    matrix = np.zeros((len(tokens), len(vocab)), dtype=np.uint8)
    for row, t in enumerate(tokens):
        matrix[row, index.get(t, index.get(UNKNOWN, 0))] = 1
    return OneHot(tokens=tokens, vocabulary=vocab, matrix=matrix)
