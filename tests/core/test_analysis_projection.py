"""Projections (PCA by default) and nearest neighbours against direct numpy computations."""

from __future__ import annotations

import numpy as np
import pytest

from core.analysis.projection import Projector, available_methods, nearest_neighbours, project
from core.errors import CorralError


@pytest.fixture()
def corpus() -> np.ndarray:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((4, 32)) * 4
    pts = np.vstack([c + rng.standard_normal((50, 32)) for c in centres])
    return pts.astype(np.float32)


def test_pca_equals_the_svd_projection_up_to_sign(corpus: np.ndarray) -> None:
    projector, coords = project(corpus)
    assert coords.shape == (200, 2) and coords.dtype == np.float32
    x = corpus.astype(np.float64)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T
    for axis in range(2):
        sign = np.sign(ref[:, axis] @ coords[:, axis])
        np.testing.assert_allclose(coords[:, axis], sign * ref[:, axis], atol=1e-3)
    ratio = s[:2] ** 2 / (s**2).sum()
    assert projector.explained is not None
    np.testing.assert_allclose(projector.explained, ratio, rtol=1e-4)


def test_a_query_lands_where_its_vector_would(corpus: np.ndarray) -> None:
    projector, coords = project(corpus)
    np.testing.assert_allclose(projector.place(corpus[17]), coords[17:18], atol=1e-4)
    progress: list[float] = []
    Projector("pca").fit(corpus, progress=lambda f, t: progress.append(f))
    assert progress and progress[-1] == 1.0 and progress == sorted(progress)


def test_nearest_neighbours_equal_brute_force(corpus: np.ndarray) -> None:
    q = corpus[5] + 0.1
    x = corpus.astype(np.float64)
    qq = q.astype(np.float64)
    cos = x @ qq / (np.linalg.norm(x, axis=1) * np.linalg.norm(qq))
    euc = np.linalg.norm(x - qq, axis=1)
    hits = nearest_neighbours(corpus, q, k=7)
    assert [h.index for h in hits] == list(np.argsort(-cos)[:7])
    for h in hits:
        assert h.cosine == pytest.approx(cos[h.index], abs=1e-6)
        assert h.euclidean == pytest.approx(euc[h.index], rel=1e-6)
        assert h.cosine_distance == pytest.approx(1 - cos[h.index], abs=1e-6)
    by_euc = nearest_neighbours(corpus, q, k=7, by="euclidean")
    assert [h.index for h in by_euc] == list(np.argsort(euc)[:7])
    assert len(nearest_neighbours(corpus[:3], q, k=10)) == 3


def test_wrong_inputs_say_what_is_wrong(corpus: np.ndarray) -> None:
    with pytest.raises(CorralError, match="dimensions"):
        nearest_neighbours(corpus, np.ones(5), k=3)
    with pytest.raises(CorralError, match="no vectors"):
        project(np.zeros((0, 8)))
    with pytest.raises(CorralError, match="Unknown projection"):
        Projector("mds")
    with pytest.raises(CorralError, match="not been computed"):
        Projector("pca").place(corpus[0])


@pytest.mark.skipif("tsne" not in available_methods(), reason="scikit-learn not installed")
def test_tsne_maps_and_places_a_query(corpus: np.ndarray) -> None:
    projector, coords = project(corpus[:60], "tsne")
    assert coords.shape == (60, 2) and np.isfinite(coords).all()
    placed = projector.place(corpus[3])
    assert placed.shape == (1, 2)
    # the query sits among its own cluster (the first 50 points)
    d = np.linalg.norm(coords - placed, axis=1)
    assert np.argsort(d)[0] < 50
