"""Benchmark: projection + first render of 100,000 384-d points on the corpus map.

Run: QT_QPA_PLATFORM=offscreen python tests/bench/bench_analysis.py [N]
Prints seconds for each stage and the ratio of Corral's PCA to scikit-learn's PCA.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def make_vectors(n: int, dim: int = 384, docs: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((docs, dim)).astype(np.float32)
    x = centres[rng.integers(0, docs, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def main(n: int = 100_000) -> None:
    from core.analysis.corpus import corpus_from_vectors
    from core.analysis.projection import Projector, nearest_neighbours

    x = make_vectors(n)
    docs = [f"/docs/document-{i % 50}.txt" for i in range(n)]
    corpus = corpus_from_vectors(x, [f"chunk {i}" for i in range(n)], docs)

    t0 = time.perf_counter()
    projector = Projector("pca")
    coords = projector.fit(corpus.vectors)
    t_pca = time.perf_counter() - t0

    from sklearn.decomposition import PCA

    t0 = time.perf_counter()
    PCA(n_components=2, svd_solver="full").fit_transform(x)
    t_raw = time.perf_counter() - t0

    t0 = time.perf_counter()
    hits = nearest_neighbours(x, x[123], k=10)
    t_knn = time.perf_counter() - t0
    assert hits[0].index == 123

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from desktop.pages.embeddings.plots import CorpusMapView

    view = CorpusMapView()
    view.resize(1000, 700)
    view.show()
    t0 = time.perf_counter()
    groups, legend = corpus.document_index()
    names = [f"document-{i % 50}.txt" for i in range(n)]
    view.set_points(coords, groups, legend, corpus.texts, names)
    image = view.grab()  # forces the first full paint
    app.processEvents()
    t_render = time.perf_counter() - t0
    assert not image.isNull()

    t0 = time.perf_counter()
    for _ in range(5):
        view.plot.vb.scaleBy((0.9, 0.9))
        view.grab()
    t_repaint = (time.perf_counter() - t0) / 5

    print(f"points: {n:,} x {x.shape[1]}")
    print(f"PCA (Corral):             {t_pca:7.3f} s")
    print(f"PCA (scikit-learn, full): {t_raw:7.3f} s   ratio Corral/raw = {t_pca / t_raw:.2f}x")
    print(f"top-10 neighbours:        {t_knn:7.3f} s")
    print(f"first render:             {t_render:7.3f} s")
    print(f"projection + first render {t_pca + t_render:7.3f} s")
    print(f"repaint after zoom:       {t_repaint:7.3f} s per frame")
    view.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
