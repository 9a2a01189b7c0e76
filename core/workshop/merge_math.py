"""The arithmetic of model merging, one tensor at a time, in float32 (as mergekit does it).

Every function takes dequantized float32 arrays and returns a new array; inputs are never
written to (they may be read-only views of a memory-mapped file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]

#: above this cosine the two tensors are (anti)parallel and SLERP falls back to a straight line
DOT_THRESHOLD = 0.9995


def linear(tensors: Sequence[Array], weights: Sequence[float]) -> Array:
    """The weighted mean ``sum(w_i * x_i) / sum(w_i)``, computed as the first tensor plus
    weighted differences, so identical inputs give that tensor exactly, as does a single
    non-zero weight."""
    total = float(sum(weights))
    if total == 0:
        raise ValueError("the weights of a linear merge add up to 0")
    nonzero = [i for i, w in enumerate(weights) if w != 0]
    if len(nonzero) == 1:
        return np.array(tensors[nonzero[0]], dtype=np.float32, copy=True)
    first = tensors[0]
    out: Array | None = None
    for x, w in zip(tensors[1:], weights[1:], strict=True):
        if w != 0:
            d = np.subtract(x, first, dtype=np.float32)
            d *= np.float32(w / total)
            if out is None:
                out = d
            else:
                out += d
    if out is None:
        return np.array(first, dtype=np.float32, copy=True)
    out += first
    return out


def slerp_coefficients(aa: float, bb: float, ab: float, t: float, *, eps: float = 1e-8
                       ) -> tuple[float, float, bool]:
    """SLERP's weights ``(s0, s1, straight)`` from a·a, b·b and a·b: ``sin((1-t)θ)/sin θ``
    and ``sin(tθ)/sin θ`` with θ the angle between a and b; nearly parallel tensors are
    interpolated on a straight line (``straight``: s0 = 1 - t, s1 = t)."""
    dot = ab / (max(aa ** 0.5, eps) * max(bb ** 0.5, eps))
    if abs(dot) > DOT_THRESHOLD:
        return 1.0 - t, t, True
    theta = float(np.arccos(np.clip(dot, -1.0, 1.0)))
    sin_theta = float(np.sin(theta))
    return (float(np.sin((1.0 - t) * theta)) / sin_theta, float(np.sin(t * theta)) / sin_theta,
            False)


def slerp(a: Array, b: Array, t: float) -> Array:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1), the whole tensor taken as one
    vector (mergekit's ``slerp``)."""
    if t == 0:
        return np.array(a, dtype=np.float32, copy=True)
    if t == 1:
        return np.array(b, dtype=np.float32, copy=True)
    fa, fb = a.ravel(), b.ravel()
    s0, s1, straight = slerp_coefficients(float(fa @ fa), float(fb @ fb), float(fa @ fb), t)
    if straight:  # as a + t (b - a): a with itself is a, exactly
        return linear([a, b], [1.0 - t, t])
    out = np.multiply(a, np.float32(s0), dtype=np.float32)
    out += np.float32(s1) * b
    return out


def keep_largest(delta: Array, density: float) -> Array:
    """TIES's trim: keep the ``density`` share of entries with the largest magnitude, zero
    the rest."""
    if density >= 1:
        return delta
    k = int(density * delta.size)
    if k <= 0:
        return np.zeros_like(delta)
    flat = np.abs(delta).ravel()
    cut = np.partition(flat, delta.size - k)[delta.size - k]
    return np.where(np.abs(delta) >= cut, delta, np.float32(0)).astype(np.float32)


def drop_and_rescale(delta: Array, drop: float, rng: np.random.Generator) -> Array:
    """DARE: drop each entry with probability ``drop``, scale the survivors by 1/(1-drop)."""
    if drop <= 0:
        return delta
    keep = rng.random(delta.shape, dtype=np.float32) >= drop
    return np.where(keep, delta * np.float32(1.0 / (1.0 - drop)), np.float32(0)).astype(
        np.float32)


def task_arithmetic(base: Array, models: Sequence[Array], weights: Sequence[float], *,
                    density: float = 1.0, drop: float = 0.0, consensus: bool = False,
                    rng: np.random.Generator | None = None) -> Array:
    """TIES (``density`` < 1 trims, ``consensus`` elects a sign per entry and averages only
    the task vectors that agree with it) and DARE (``drop`` with rescale), on the task vectors
    ``model - base``; the weighted mean of what is kept is added back to ``base``."""
    if not models:
        return np.array(base, dtype=np.float32, copy=True)
    deltas = []
    for x in models:
        d = np.subtract(x, base, dtype=np.float32)
        if drop > 0:
            d = drop_and_rescale(d, drop, rng or np.random.default_rng(0))
        if density < 1:
            d = keep_largest(d, density)
        deltas.append(d)
    if not any(np.any(d) for d in deltas):
        return np.array(base, dtype=np.float32, copy=True)
    w = [np.float32(x) for x in weights]
    if consensus:
        total = np.zeros(base.shape, dtype=np.float32)
        for d, wi in zip(deltas, w, strict=True):
            total += wi * d
        elected = np.where(total >= 0, np.float32(1), np.float32(-1))
        mixed = np.zeros(base.shape, dtype=np.float32)
        divisor = np.zeros(base.shape, dtype=np.float32)
        for d, wi in zip(deltas, w, strict=True):
            agree = np.sign(d) == elected
            mixed += np.where(agree, wi * d, np.float32(0))
            divisor += np.where(agree, wi, np.float32(0))
        divisor[np.abs(divisor) < 1e-8] = 1
        mixed /= divisor
    else:
        mixed = np.zeros(base.shape, dtype=np.float32)
        for d, wi in zip(deltas, w, strict=True):
            mixed += wi * d
        mixed /= np.float32(sum(weights) or 1)
    return np.add(base, mixed, dtype=np.float32)


def cheap_embed_gate(embed: Callable[[Sequence[int]], Array], positive: Sequence[Sequence[int]],
                     negative: Sequence[Sequence[int]] = ()) -> Array:
    """One expert's router row in mergekit's "cheap embed" mode: the sum of the token
    embeddings of its positive prompts (minus those of its negative prompts), normalised.
    ``embed(ids)`` gives the embedding rows of those token ids."""
    def total(prompts: Sequence[Sequence[int]]) -> npt.NDArray[np.float64]:
        acc: npt.NDArray[np.float64] | None = None
        for ids in prompts:
            if ids:
                rows = embed(ids).astype(np.float64).sum(axis=0)
                acc = rows if acc is None else acc + rows
        return acc if acc is not None else np.zeros(1)

    h = total(positive)
    if negative:
        h = h - total(negative)
    return (h / max(float(np.linalg.norm(h)), 1e-8)).astype(np.float32)
