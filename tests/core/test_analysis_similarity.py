"""Similarity/distance matrices equal direct numpy/scipy computations; order and CSV export."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from core.analysis.similarity import (
    display_order,
    format_matrix,
    matrix_csv,
    reorder,
    similarity_matrix,
)
from core.errors import CorralError

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Stock markets fell sharply today.",
    "Shares dropped as investors panicked.",
    "How do I bake sourdough bread?",
    "A recipe for baking bread at home.",
]


@pytest.fixture()
def vectors() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.standard_normal((9, 384)).astype(np.float32) * 3


def test_euclidean_and_manhattan_equal_scipy(vectors: np.ndarray) -> None:
    for metric, name in (("euclidean", "euclidean"), ("manhattan", "cityblock")):
        ours = similarity_matrix(vectors, metric)
        ref = cdist(vectors.astype(np.float64), vectors.astype(np.float64), name)
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
        assert (np.diag(ours) == 0).all()


def test_cosine_equals_numpy_and_handles_zero_vectors(vectors: np.ndarray) -> None:
    v = vectors.astype(np.float64)
    ref = (v @ v.T) / np.outer(np.linalg.norm(v, axis=1), np.linalg.norm(v, axis=1))
    np.testing.assert_allclose(similarity_matrix(vectors, "cosine"), ref, atol=1e-12)
    with_zero = np.vstack([vectors[:2], np.zeros((1, 384), np.float32)])
    m = similarity_matrix(with_zero, "cosine")
    assert m[2].tolist() == [0.0, 0.0, 0.0] and np.isfinite(m).all()


def test_unknown_measure_is_a_sentence() -> None:
    with pytest.raises(CorralError, match="Unknown measure"):
        similarity_matrix([[1.0, 0.0]], "dot")


def test_clustered_order_puts_similar_items_next_to_each_other() -> None:
    # three tight pairs, entered interleaved
    base = np.eye(3)
    pts = np.array([base[0], base[1], base[2], base[0] + 0.01, base[1] + 0.01, base[2] + 0.01])
    for metric in ("cosine", "euclidean", "manhattan"):
        m = similarity_matrix(pts, metric)
        order = display_order(m, metric, "clustered")
        assert sorted(order) == list(range(6))
        pos = {item: k for k, item in enumerate(order)}
        for a, b in ((0, 3), (1, 4), (2, 5)):
            assert abs(pos[a] - pos[b]) == 1
        r = reorder(m, order)
        assert r[0, 1] == m[order[0], order[1]]
    assert display_order(similarity_matrix(pts), "cosine", "input") == list(range(6))
    sorted_order = display_order(similarity_matrix(pts), "cosine", "sorted")
    assert sorted(sorted_order) == list(range(6))


def test_csv_export_round_trips_the_raw_numbers(vectors: np.ndarray) -> None:
    m = similarity_matrix(vectors[:3], "euclidean")
    labels = ["one, with comma", 'two "quoted"', "three"]
    rows = list(csv.reader(io.StringIO(matrix_csv(m, labels))))
    assert rows[0] == ["", *labels]
    assert [r[0] for r in rows[1:]] == labels
    back = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    assert (back == m).all()  # repr keeps every digit
    assert "one, with comma" in format_matrix(m, labels)


@pytest.mark.slow
def test_matrices_from_the_real_embedder_equal_direct_computation() -> None:
    from sentence_transformers import SentenceTransformer

    from core.rag.embedder import make_embedder, minilm_path

    raw = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    ref = np.asarray(raw.encode(SENTENCES, convert_to_numpy=True), dtype=np.float64)
    ours = make_embedder("minilm").embed(SENTENCES)
    cos_ref = 1.0 - cdist(ref, ref, "cosine")
    np.testing.assert_allclose(similarity_matrix(ours, "cosine"), cos_ref, atol=1e-5)
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    for metric, name in (("euclidean", "euclidean"), ("manhattan", "cityblock")):
        np.testing.assert_allclose(similarity_matrix(ours, metric), cdist(unit, unit, name),
                                   atol=1e-5)
    m = similarity_matrix(ours, "cosine")
    # a user would notice: the cat sentences are closer to each other than to the markets
    assert m[0, 1] > m[0, 2] and m[2, 3] > m[2, 4] and m[4, 5] > m[4, 0]
