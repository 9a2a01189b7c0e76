"""Pairwise similarity and distance matrices of embeddings, their display order and CSV export.

Three measures: cosine similarity (1 = same direction, higher is closer), euclidean distance
and manhattan distance (0 = identical, lower is closer). Computed in float64 from the raw
vectors so the numbers match a direct numpy/scipy computation.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import CorralError


@dataclass(frozen=True)
class Measure:
    name: str
    label: str
    higher_is_closer: bool
    explanation: str


MEASURES: dict[str, Measure] = {
    "cosine": Measure(
        "cosine",
        "Cosine similarity",
        True,
        "The angle between two vectors: 1 means the same direction (same meaning), "
        "0 unrelated, -1 opposite. Length does not matter.",
    ),
    "euclidean": Measure(
        "euclidean",
        "Euclidean distance",
        False,
        "The straight-line distance between two points: 0 means identical; "
        "larger means further apart.",
    ),
    "manhattan": Measure(
        "manhattan",
        "Manhattan distance",
        False,
        "The sum of the differences in every dimension, like walking city blocks: "
        "0 means identical.",
    ),
}

ORDERS = ("input", "sorted", "clustered")


def measure(name: str) -> Measure:
    try:
        return MEASURES[name]
    except KeyError:
        choices = ", ".join(MEASURES)
        raise CorralError(f"Unknown measure '{name}'; choose one of {choices}") from None


def as_matrix(vectors: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float64)
    if arr.ndim != 2:
        raise CorralError("Embeddings must be a list of vectors of equal length")
    return arr


def similarity_matrix(
    vectors: np.ndarray | Sequence[Sequence[float]],
    metric: str = "cosine",
    others: np.ndarray | Sequence[Sequence[float]] | None = None,
) -> np.ndarray:
    """``M[i, j]`` = the measure between ``vectors[i]`` and ``others[j]`` (default: vectors).

    Cosine of a zero vector is reported as 0.
    """
    measure(metric)
    a = as_matrix(vectors)
    b = a if others is None else as_matrix(others)
    if a.shape[1] != b.shape[1]:
        raise CorralError("Both sets of embeddings must have the same dimension")
    if metric == "cosine":
        na = np.linalg.norm(a, axis=1, keepdims=True)
        nb = np.linalg.norm(b, axis=1, keepdims=True)
        ua = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
        ub = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
        out: np.ndarray = np.clip(ua @ ub.T, -1.0, 1.0)
        return out
    return _pairwise_distance(a, b, metric)


def _pairwise_distance(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Exact distances by direct differences, in row blocks that stay under ~32 MB."""
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float64)
    block = max(1, int(4_000_000 // max(1, b.shape[0] * b.shape[1])))
    for i in range(0, a.shape[0], block):
        diff = a[i : i + block, None, :] - b[None, :, :]
        if metric == "euclidean":
            out[i : i + block] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        else:
            out[i : i + block] = np.abs(diff).sum(axis=2)
    return out


def to_distance(matrix: np.ndarray, metric: str) -> np.ndarray:
    """A distance matrix (0 on the diagonal, never negative) for ordering and clustering."""
    if measure(metric).higher_is_closer:
        dist = 1.0 - matrix
    else:
        dist = matrix.copy()
    dist = np.clip((dist + dist.T) / 2.0, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    return dist


def display_order(matrix: np.ndarray, metric: str, how: str = "input") -> list[int]:
    """Row order for the heatmap.

    ``input``: as entered; ``sorted``: most central item first (closest on average to the
    others); ``clustered``: hierarchical clustering leaf order (average linkage, optimal
    leaf ordering), so similar items sit next to each other.
    """
    n = matrix.shape[0]
    if how == "input" or n < 3:
        return list(range(n))
    dist = to_distance(matrix, metric)
    if how == "sorted":
        mean = dist.sum(axis=1) / max(1, n - 1)
        return [int(i) for i in np.argsort(mean, kind="stable")]
    if how == "clustered":
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform

        z = linkage(squareform(dist, checks=False), method="average", optimal_ordering=True)
        return [int(i) for i in leaves_list(z)]
    raise CorralError(f"Unknown order '{how}'; choose one of {', '.join(ORDERS)}")


def reorder(matrix: np.ndarray, order: Sequence[int]) -> np.ndarray:
    idx = np.asarray(order, dtype=int)
    out: np.ndarray = matrix[np.ix_(idx, idx)]
    return out


def matrix_csv(
    matrix: np.ndarray, labels: Sequence[str], column_labels: Sequence[str] | None = None
) -> str:
    """The raw numbers as CSV: a header row of labels, then one labelled row per item."""
    cols = list(column_labels) if column_labels is not None else list(labels)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["", *cols])
    for label, row in zip(labels, matrix, strict=True):
        writer.writerow([label, *(repr(float(v)) for v in row)])
    return buf.getvalue()


def format_matrix(matrix: np.ndarray, labels: Sequence[str], digits: int = 3) -> str:
    """A plain-text table for terminals: numbered rows, the labels listed underneath."""
    n = matrix.shape[0]
    width = max(digits + 4, len(str(n)) + 1)
    head = " " * 4 + "".join(f"{j + 1:>{width}}" for j in range(matrix.shape[1]))
    lines = [head]
    for i in range(n):
        cells = "".join(f"{float(v):>{width}.{digits}f}" for v in matrix[i])
        lines.append(f"{i + 1:>3} {cells}")
    lines.append("")
    lines.extend(f"{i + 1:>3}  {label}" for i, label in enumerate(labels))
    return "\n".join(lines)
