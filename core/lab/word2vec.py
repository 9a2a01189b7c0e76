"""word2vec with gensim: CBOW (predict a word from its context) or skip-gram (predict the
context from the word), trained one epoch per call so the lab can report and stop between
and within epochs."""

from __future__ import annotations

import time
from collections.abc import Iterator

from core.errors import Cancelled, CorralError
from core.lab.vectors import Cancel, Progress, TrainedVectors

ARCHS = ("cbow", "skipgram")


class _Feed:
    """The sentences, re-iterable (gensim refuses generators), reporting how far an epoch has
    come; once cancelled it simply stops, so gensim ends the epoch cleanly."""

    def __init__(self, sentences: list[list[str]], epoch: int, epochs: int,
                 progress: Progress | None, cancelled: Cancel | None) -> None:
        self.sentences = sentences
        self.epoch = epoch
        self.epochs = epochs
        self.progress = progress
        self.cancelled = cancelled
        self.stopped = False

    def __iter__(self) -> Iterator[list[str]]:
        if self.progress is None and self.cancelled is None:
            yield from self.sentences
            return
        n = len(self.sentences)
        step = max(1, n // 50)
        for start in range(0, n, step):
            if self.cancelled is not None and self.cancelled():
                self.stopped = True
                return
            if self.progress is not None:
                self.progress((self.epoch + start / n) / self.epochs,
                              f"word2vec epoch {self.epoch + 1} of {self.epochs}")
            yield from self.sentences[start:start + step]


def train_word2vec(sentences: list[list[str]], *, arch: str = "cbow", dim: int = 50, window: int = 5,
                   min_count: int = 1, epochs: int = 5, seed: int = 0, workers: int = 1,
                   negative: int = 5, progress: Progress | None = None,
                   cancelled: Cancel | None = None) -> TrainedVectors:
    """Train word2vec on ``sentences``. ``workers=1`` with a fixed seed gives the same vectors
    every run. Cancelled ends with Cancelled whose partial is the vectors so far."""
    from gensim.models import Word2Vec

    if arch not in ARCHS:
        raise CorralError(f"unknown word2vec architecture {arch!r}", hint="Use cbow or skipgram.")
    if dim < 1 or epochs < 1 or window < 1 or workers < 1:
        raise CorralError("dimensions, window, epochs and workers must be at least 1")
    start = time.perf_counter()
    model = Word2Vec(vector_size=dim, window=window, min_count=min_count, sg=int(arch == "skipgram"),
                     seed=seed, workers=workers, negative=negative)
    model.build_vocab(sentences)
    if not len(model.wv):
        raise CorralError(f"no word occurs {min_count} times or more",
                          hint="Lower the minimum count, or use a longer text.")
    params = {"arch": arch, "dim": dim, "window": window, "min_count": min_count,
              "epochs": epochs, "seed": seed, "negative": negative}

    def result(done: int) -> TrainedVectors:
        return TrainedVectors(arch, model.wv, time.perf_counter() - start, done, [], params)

    high, low = model.alpha, model.min_alpha
    for e in range(epochs):
        feed = _Feed(sentences, e, epochs, progress, cancelled)
        # the learning rate falls linearly over all epochs, as one train(epochs=...) call does
        model.train(feed, total_examples=len(sentences), epochs=1,
                    start_alpha=high - (high - low) * e / epochs,
                    end_alpha=high - (high - low) * (e + 1) / epochs)
        if feed.stopped:
            raise Cancelled("cancelled", partial=result(e))
    if progress is not None:
        progress(1.0, f"word2vec: {epochs} epochs")
    return result(epochs)
