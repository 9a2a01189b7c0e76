"""GloVe (Pennington, Socher and Manning, 2014): weighted least squares on the log of the
co-occurrence counts, trained with AdaGrad, vectorised with numpy and scipy.sparse.

For each nonzero X_ij the cost is f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2 / 2 with
f(x) = min(1, (x / x_max)^alpha), x_max = 100, alpha = 0.75. Word vectors w, context vectors
w~ and both biases start uniform in [-0.5, 0.5] / dim and learn with AdaGrad (learning rate
0.05, squared-gradient sums starting at 1, each step divided by the root of the sum before
the step is added, as the reference code does; unlike that code, the sums hold the squared
gradients themselves, as AdaGrad defines them, not the squared learning-rate-scaled steps, and
no gradient is clipped). The nonzeros are visited in a new random order each epoch, a
mini-batch at a time (at least ~64 steps per epoch, see ``auto_batch``; batch size 1 is the
paper's one step per nonzero): a row that appears several times in a batch gets the sum of
its gradients. A word's final vector is w + w~, as in the paper.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from scipy import sparse

from core.errors import CorralError
from core.lab.cooccur import Vocabulary, cooccurrence, vocabulary
from core.lab.vectors import Cancel, Progress, TrainedVectors, check_cancel, keyed_vectors

X_MAX = 100.0
ALPHA = 0.75
LEARNING_RATE = 0.05


def weighting(x: np.ndarray, x_max: float = X_MAX, alpha: float = ALPHA) -> np.ndarray:
    """f(x) = (x / x_max)^alpha below x_max, 1 from there on."""
    return np.minimum(1.0, (np.asarray(x, dtype=np.float64) / x_max) ** alpha)


def train_glove(sentences: list[list[str]], *, dim: int = 50, window: int = 10, min_count: int = 1,
                epochs: int = 25, seed: int = 0, batch_size: int | None = None,
                learning_rate: float = LEARNING_RATE, x_max: float = X_MAX, alpha: float = ALPHA,
                progress: Progress | None = None, cancelled: Cancel | None = None
                ) -> TrainedVectors:
    """Train GloVe vectors on ``sentences``; ``losses`` holds each epoch's cost (the sum of
    the weighted squared errors met during the epoch, divided by the number of nonzeros).
    Cancelled (``cancelled()`` true) ends with Cancelled whose partial is the vectors so far."""
    if dim < 1 or epochs < 1 or (batch_size is not None and batch_size < 1):
        raise CorralError("dimensions, epochs and batch size must be at least 1")
    start = time.perf_counter()
    vocab = vocabulary(sentences, min_count)
    counts = cooccurrence(sentences, vocab, window).tocoo()
    if counts.nnz == 0:
        raise CorralError("no two words of the vocabulary share a window",
                          hint="Use a longer text, a wider window or a lower minimum count.")
    return GloveTrainer(vocab, counts.row, counts.col, counts.data, dim=dim, seed=seed,
                        learning_rate=learning_rate, x_max=x_max, alpha=alpha,
                        params={"dim": dim, "window": window, "min_count": min_count,
                                "epochs": epochs, "seed": seed}
                        ).train(epochs, batch_size or auto_batch(counts.nnz), start, progress,
                                cancelled)


def auto_batch(nnz: int) -> int:
    """A mini-batch that gives each epoch at least ~64 AdaGrad steps (the paper takes one
    step per nonzero; small texts need many small steps), at most 8192 nonzeros."""
    return max(1, min(8192, nnz // 64))


class GloveTrainer:
    """The parameters and AdaGrad state of one GloVe model over a fixed list of nonzeros."""

    def __init__(self, vocab: Vocabulary, rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                 *, dim: int, seed: int, learning_rate: float, x_max: float, alpha: float,
                 params: dict[str, Any]) -> None:
        self.vocab = vocab
        self.params = params
        self.lr = np.float32(learning_rate)
        self.rng = np.random.default_rng(seed)
        n = len(vocab)
        self.i = np.asarray(rows, dtype=np.int64)
        self.j = np.asarray(cols, dtype=np.int64)
        self.log_x = np.log(values).astype(np.float32)
        self.f_x = weighting(values, x_max, alpha).astype(np.float32)

        def init(*shape: int) -> np.ndarray:
            return ((self.rng.random(shape, dtype=np.float32) - 0.5) / dim).astype(np.float32)

        self.w, self.wc = init(n, dim), init(n, dim)
        self.b, self.bc = init(n, 1), init(n, 1)  # (a column, to share the vectors' code)
        self.gw, self.gwc = np.ones((n, dim), np.float32), np.ones((n, dim), np.float32)
        self.gb, self.gbc = np.ones((n, 1), np.float32), np.ones((n, 1), np.float32)

    def vectors(self) -> np.ndarray:
        out: np.ndarray = self.w + self.wc
        return out

    def epoch(self, batch_size: int, cancelled: Cancel | None = None,
              progress: Progress | None = None) -> float:
        nnz = len(self.i)
        order = self.rng.permutation(nnz)
        cost = 0.0
        for n, first in enumerate(range(0, nnz, batch_size)):
            if n % 16 == 0:
                check_cancel(cancelled)
                if progress is not None:
                    progress(first / nnz, "")
            pick = order[first:first + batch_size]
            i, j = self.i[pick], self.j[pick]
            wi, wj = self.w[i], self.wc[j]
            diff = np.einsum("nd,nd->n", wi, wj) + self.b[i, 0] + self.bc[j, 0] - self.log_x[pick]
            fdiff = (self.f_x[pick] * diff)[:, None]
            cost += 0.5 * float(np.dot(fdiff[:, 0], diff))
            self._step(i, fdiff * wj, fdiff, self.w, self.gw, self.b, self.gb)
            self._step(j, fdiff * wi, fdiff, self.wc, self.gwc, self.bc, self.gbc)
        return cost / nnz

    def _step(self, rows: np.ndarray, grad: np.ndarray, grad_b: np.ndarray, w: np.ndarray,
              gsq: np.ndarray, b: np.ndarray, gsq_b: np.ndarray) -> None:
        """AdaGrad on the rows a batch touched: one summed gradient per distinct row."""
        uniq, inverse = np.unique(rows, return_inverse=True)
        g, gb = _row_sums(inverse, len(uniq), grad, grad_b)
        w[uniq] -= self.lr * g / np.sqrt(gsq[uniq])
        gsq[uniq] += g * g
        b[uniq] -= self.lr * gb / np.sqrt(gsq_b[uniq])
        gsq_b[uniq] += gb * gb

    def result(self, start: float, epochs: int, losses: list[float]) -> TrainedVectors:
        kv = keyed_vectors(self.vocab.words, self.vectors())
        return TrainedVectors("glove", kv, time.perf_counter() - start, epochs, losses, self.params)

    def train(self, epochs: int, batch_size: int, start: float, progress: Progress | None,
              cancelled: Cancel | None) -> TrainedVectors:
        from core.errors import Cancelled

        losses: list[float] = []
        for e in range(epochs):
            def report(f: float, _text: str, e: int = e) -> None:
                if progress is not None:
                    last = f" (cost {losses[-1]:.4f})" if losses else ""
                    progress((e + f) / epochs, f"GloVe epoch {e + 1} of {epochs}{last}")
            try:
                losses.append(self.epoch(batch_size, cancelled, report))
            except Cancelled:
                raise Cancelled("cancelled", partial=self.result(start, e, losses)) from None
        if progress is not None:
            progress(1.0, f"GloVe: {epochs} epochs, cost {losses[-1]:.4f}")
        return self.result(start, epochs, losses)


def _row_sums(inverse: np.ndarray, n: int, *grads: np.ndarray) -> list[np.ndarray]:
    """Each grad's rows summed by ``inverse`` (row r goes to sum inverse[r]): np.add.at for
    small batches, a sparse product (numpy's fastest scatter-add) for large ones."""
    if len(inverse) < 2048:
        out = []
        for grad in grads:
            total = np.zeros((n, grad.shape[1]), dtype=np.float32)
            np.add.at(total, inverse, grad)
            out.append(total)
        return out
    ones = np.ones(len(inverse), dtype=np.float32)
    summing = sparse.csr_matrix((ones, (inverse, np.arange(len(inverse)))), shape=(n, len(inverse)))
    return [np.asarray(summing @ grad, dtype=np.float32) for grad in grads]
