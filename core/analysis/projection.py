"""2-D maps of embeddings (PCA by default; UMAP or t-SNE when installed) and nearest neighbours.

A :class:`Projector` fits a map to a corpus and can place new vectors (a query) on it.
Progress goes to an optional callback ``progress(fraction, text)`` so workers can report it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.errors import CorralError, FeatureUnavailable

Progress = Callable[[float, str], None]

METHODS = {
    "pca": "PCA (fast, keeps the largest spreads; distances are only roughly kept)",
    "umap": "UMAP (keeps neighbourhoods; slower)",
    "tsne": "t-SNE (keeps neighbourhoods; slow on large corpora)",
}


def available_methods() -> list[str]:
    """Methods that can run here: PCA always; UMAP with umap-learn; t-SNE with scikit-learn."""
    out = ["pca"]
    if importlib.util.find_spec("umap") is not None:
        out.append("umap")
    if importlib.util.find_spec("sklearn") is not None:
        out.append("tsne")
    return out


def _noop(fraction: float, text: str) -> None:
    return None


def _as_float32(vectors: np.ndarray) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise CorralError("There are no vectors to project")
    return arr


class Projector:
    """Fit a 2-D map to vectors; ``place`` puts new vectors on the same map."""

    def __init__(self, method: str = "pca", *, seed: int = 0) -> None:
        if method not in METHODS:
            raise CorralError(f"Unknown projection '{method}'; choose one of {', '.join(METHODS)}")
        if method not in available_methods():
            raise FeatureUnavailable(
                f"{method.upper()} is not installed",
                hint="Install umap-learn (UMAP) or scikit-learn (t-SNE), or use PCA.",
            )
        self.method = method
        self.seed = seed
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None  # (2, dim) for PCA
        self.explained: np.ndarray | None = None  # variance ratio per component (PCA)
        self._model: object | None = None
        self._fitted: np.ndarray | None = None
        self._coords: np.ndarray | None = None

    def fit(self, vectors: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """The map's coordinates, shape (n, 2), float32."""
        report = progress or _noop
        x = _as_float32(vectors)
        if self.method == "pca":
            coords = self._fit_pca(x, report)
        elif self.method == "umap":
            coords = self._fit_umap(x, report)
        else:
            coords = self._fit_tsne(x, report)
        self._fitted = x
        self._coords = coords
        report(1.0, "Map ready")
        return coords

    def _fit_pca(self, x: np.ndarray, report: Progress, chunk: int = 16384) -> np.ndarray:
        n, dim = x.shape
        mean = x.mean(axis=0, dtype=np.float64)
        gram = np.zeros((dim, dim), dtype=np.float64)
        for i in range(0, n, chunk):
            part = x[i : i + chunk]
            gram += (part.T @ part).astype(np.float64)
            report(0.8 * min(1.0, (i + chunk) / n), "Finding the main directions")
        cov = gram / n - np.outer(mean, mean)
        values, vecs = np.linalg.eigh(cov)
        top = np.argsort(values)[::-1][:2]
        comps = vecs[:, top].T  # (2, dim)
        # A fixed sign per axis (largest loading positive) keeps the map from flipping.
        signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])
        comps *= np.where(signs == 0, 1.0, signs)[:, None]
        total = float(values.clip(min=0).sum())
        self.explained = values[top].clip(min=0) / total if total > 0 else np.zeros(2)
        if comps.shape[0] < 2:  # one-dimensional data: second axis is zero
            comps = np.vstack([comps, np.zeros((2 - comps.shape[0], dim))])
        self.mean = mean
        self.components = comps
        report(0.9, "Placing the points")
        return self._pca_place(x)

    def _pca_place(self, x: np.ndarray) -> np.ndarray:
        assert self.components is not None and self.mean is not None
        comps = self.components.astype(np.float32)
        offset = (self.mean @ self.components.T).astype(np.float32)
        out: np.ndarray = (x @ comps.T) - offset
        return out.astype(np.float32, copy=False)

    def _fit_umap(self, x: np.ndarray, report: Progress) -> np.ndarray:
        import umap

        report(0.05, "Running UMAP (this can take a while)")
        n_neighbors = max(2, min(15, x.shape[0] - 1))
        model = umap.UMAP(
            n_components=2, metric="cosine", random_state=self.seed, n_neighbors=n_neighbors
        )
        coords = np.asarray(model.fit_transform(x), dtype=np.float32)
        self._model = model
        return coords

    def _fit_tsne(self, x: np.ndarray, report: Progress) -> np.ndarray:
        from sklearn.manifold import TSNE

        data = x
        if x.shape[1] > 50 and x.shape[0] > 50:
            report(0.05, "Reducing to 50 dimensions first")
            data = _pca_reduce(x, 50)
        report(0.1, "Running t-SNE (this can take a while)")
        perplexity = float(max(1.0, min(30.0, (x.shape[0] - 1) / 3)))
        tsne = TSNE(
            n_components=2, init="pca", random_state=self.seed, perplexity=perplexity,
            metric="cosine",
        )
        return np.asarray(tsne.fit_transform(data), dtype=np.float32)

    def place(self, vectors: np.ndarray, k: int = 5) -> np.ndarray:
        """Coordinates on the fitted map for new vectors (a query), shape (m, 2).

        t-SNE cannot place new points, so a new vector goes to the cosine-weighted mean of
        its ``k`` nearest corpus points.
        """
        if self._fitted is None or self._coords is None:
            raise CorralError("The map has not been computed yet")
        x = _as_float32(np.atleast_2d(vectors))
        if self.method == "pca":
            return self._pca_place(x)
        if self.method == "umap" and self._model is not None:
            return np.asarray(self._model.transform(x), dtype=np.float32)  # type: ignore[attr-defined]
        out = np.empty((x.shape[0], 2), dtype=np.float32)
        for row, q in enumerate(x):
            hits = nearest_neighbours(self._fitted, q, k=k)
            w = np.array([max(h.cosine, 0.0) + 1e-6 for h in hits])
            pts = self._coords[[h.index for h in hits]]
            out[row] = (pts * w[:, None]).sum(axis=0) / w.sum()
        return out


def _pca_reduce(x: np.ndarray, dim: int) -> np.ndarray:
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred[: min(len(centred), 20000)], full_matrices=False)
    out: np.ndarray = centred @ vt[:dim].T
    return out


def project(
    vectors: np.ndarray, method: str = "pca", *, seed: int = 0, progress: Progress | None = None
) -> tuple[Projector, np.ndarray]:
    projector = Projector(method, seed=seed)
    return projector, projector.fit(vectors, progress)


@dataclass(frozen=True)
class Neighbour:
    """A corpus vector near a query: cosine similarity and euclidean distance to it."""

    index: int
    cosine: float  # similarity, 1 = same direction
    euclidean: float

    @property
    def cosine_distance(self) -> float:
        return 1.0 - self.cosine


def nearest_neighbours(
    vectors: np.ndarray, query: np.ndarray, k: int = 10, by: str = "cosine"
) -> list[Neighbour]:
    """The ``k`` vectors nearest to ``query`` by cosine similarity or euclidean distance."""
    if by not in ("cosine", "euclidean"):
        raise CorralError("Neighbours are found by 'cosine' or 'euclidean'")
    x = _as_float32(vectors)
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    if q.shape[0] != x.shape[1]:
        raise CorralError(
            f"The query has {q.shape[0]} dimensions but the corpus has {x.shape[1]}"
        )
    k = max(0, min(k, x.shape[0]))
    if k == 0:
        return []
    dots = x @ q
    norms = np.linalg.norm(x, axis=1)
    qn = float(np.linalg.norm(q))
    if by == "cosine":
        denom = norms * qn
        score = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
        pick = np.argpartition(-score, k - 1)[:k] if k < len(score) else np.arange(len(score))
        pick = pick[np.argsort(-score[pick], kind="stable")]
    else:
        sq = np.maximum(norms**2 + qn**2 - 2.0 * dots, 0.0)
        pick = np.argpartition(sq, k - 1)[:k] if k < len(sq) else np.arange(len(sq))
    out = []
    for i in pick:
        v = x[i].astype(np.float64)
        qq = q.astype(np.float64)
        nv, nq = float(np.linalg.norm(v)), float(np.linalg.norm(qq))
        cos = float(v @ qq / (nv * nq)) if nv > 0 and nq > 0 else 0.0
        out.append(Neighbour(int(i), cos, float(np.linalg.norm(v - qq))))
    if by == "euclidean":
        out.sort(key=lambda h: h.euclidean)
    return out
