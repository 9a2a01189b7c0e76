"""Trained word vectors, whichever method made them, and what the lab asks of them: nearest
words, analogies (a - b + c) and a flat map. Held as gensim KeyedVectors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import Cancelled, CorralError

if TYPE_CHECKING:
    from gensim.models import KeyedVectors

#: progress(fraction in [0, 1], text) and cancelled() -> bool, as every lab trainer takes them
Progress = Callable[[float, str], None]
Cancel = Callable[[], bool]

METHODS = ("cbow", "skipgram", "glove")


@dataclass
class TrainedVectors:
    method: str  # one of METHODS
    keyed: KeyedVectors
    seconds: float  # training time (vocabulary and counts included)
    epochs: int  # epochs completed
    losses: list[float] = field(default_factory=list)  # per epoch, where the method has one
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def words(self) -> list[str]:
        return list(self.keyed.index_to_key)

    @property
    def dimension(self) -> int:
        return int(self.keyed.vector_size)

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "words": len(self.keyed), "dimension": self.dimension,
                "epochs": self.epochs, "seconds": round(self.seconds, 4),
                "losses": [round(x, 6) for x in self.losses], "params": self.params}


def keyed_vectors(words: list[str], vectors: np.ndarray) -> KeyedVectors:
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=int(vectors.shape[1]), count=0, dtype=np.float32)
    kv.add_vectors(words, vectors.astype(np.float32))
    return kv


def _known(tv: TrainedVectors, *words: str) -> None:
    missing = [w for w in words if w not in tv.keyed.key_to_index]
    if missing:
        raise CorralError(f"not in the vocabulary: {', '.join(missing)}",
                          hint="Pick words the text holds at least the minimum count times.")


def nearest(tv: TrainedVectors, word: str, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` words with the highest cosine similarity to ``word`` (itself left out)."""
    word = word.lower()
    _known(tv, word)
    return [(w, float(s)) for w, s in tv.keyed.most_similar(word, topn=k)]


def analogy(tv: TrainedVectors, a: str, b: str, c: str, k: int = 5) -> list[tuple[str, float]]:
    """Words nearest to a - b + c (king - man + woman), the three given left out."""
    a, b, c = a.lower(), b.lower(), c.lower()
    _known(tv, a, b, c)
    return [(w, float(s)) for w, s in tv.keyed.most_similar(positive=[a, c], negative=[b], topn=k)]


def word_map(tv: TrainedVectors, limit: int = 300) -> tuple[list[str], np.ndarray]:
    """The ``limit`` most frequent words and a 2-D point for each (PCA of unit vectors)."""
    words = tv.words[:limit]
    if len(words) < 2:
        raise CorralError("a map needs at least two words")
    x = np.asarray(tv.keyed.get_normed_vectors()[: len(words)], dtype=np.float64)
    x = x - x.mean(axis=0)
    _u, _s, vt = np.linalg.svd(x, full_matrices=False)
    coords = x @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((len(words), 2 - coords.shape[1]))])
    return words, coords.astype(np.float32)


def check_cancel(cancelled: Cancel | None, partial: object = None) -> None:
    if cancelled is not None and cancelled():
        raise Cancelled("cancelled", partial=partial)
