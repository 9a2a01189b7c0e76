"""The fast path for the common case: two F16/F32 models blended (linear, SLERP) or a tensor
copied, a million weights at a time, with torch's vectorised half-precision casts.

Chunks stay in the CPU cache, so a tensor costs about what reading it costs; float32 is still
the arithmetic type. Quantized inputs and the other methods take the whole-tensor path.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np

CHUNK = 1 << 20
#: smaller tensors take the plain numpy path: no reason to import torch for them
SMALL = 1 << 18
_threads: dict[str, int] = {"depth": 0, "before": 0}


@cache
def available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _torch() -> Any:
    """torch, imported on first need; inside :func:`one_thread` it runs on one thread."""
    import torch

    if _threads["depth"] and not _threads["before"]:
        _threads["before"] = torch.get_num_threads()
        torch.set_num_threads(1)
    return torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Chunked casts are fastest on one torch thread (no pool hand-offs between numpy and
    torch); the process's thread count is restored afterwards."""
    _threads["depth"] += 1
    try:
        yield
    finally:
        _threads["depth"] -= 1
        if not _threads["depth"] and _threads["before"]:
            import torch

            torch.set_num_threads(_threads["before"])
            _threads["before"] = 0


def convert(x: np.ndarray[Any, Any], dtype: type[np.floating[Any]]) -> np.ndarray[Any, Any]:
    """``x`` cast between float16 and float32 (torch's vectorised cast for big arrays)."""
    if x.dtype == dtype or x.size < SMALL or not available():
        return np.asarray(x, dtype=dtype)
    torch = _torch()
    out = _tensor(np.ascontiguousarray(x)).to(torch.float16 if dtype is np.float16
                                               else torch.float32)
    return np.asarray(out.numpy())


def flat(tensor: tuple[Any, tuple[int, ...], Any]) -> np.ndarray[Any, Any] | None:
    """A tensor's weights (a ``Source.tensors`` entry) as a flat F16/F32 view of the file,
    or None if quantized or small (or torch is missing): the whole-tensor path does those."""
    from gguf import GGMLQuantizationType as Q

    qtype, _shape, data = tensor
    raw: np.ndarray[Any, Any] = data
    if not available() or raw.size < SMALL * 2:
        return None
    if qtype == Q.F32:
        return raw.view(np.float32).reshape(-1)
    if qtype == Q.F16:
        return raw.view(np.float16).reshape(-1)
    return None


def _tensor(x: np.ndarray[Any, Any]) -> Any:
    torch = _torch()
    with warnings.catch_warnings():  # read-only memory maps are only ever read here
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(x)


def copy(a: np.ndarray[Any, Any], out: type[np.floating[Any]]) -> Iterator[np.ndarray[Any, Any]]:
    """``a`` in the output type, chunk by chunk (the very bytes when the type is the same)."""
    torch = _torch()
    target = torch.float16 if out is np.float16 else torch.float32
    for i in range(0, a.size, CHUNK):
        part = a[i:i + CHUNK]
        yield part if part.dtype == out else _tensor(part).to(target).numpy()


def slerp(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], t: float, *,
          out: type[np.floating[Any]]) -> Iterator[np.ndarray[Any, Any]]:
    """SLERP needs the angle between the whole tensors before any weight: the first pass
    casts the chunks (kept, two float32 tensors at most) and sums a·a, b·b, a·b; the second
    blends them."""
    from core.workshop.merge_math import slerp_coefficients

    torch = _torch()
    xs, ys = [], []
    aa = bb = ab = 0.0
    for i in range(0, a.size, CHUNK):
        x = _tensor(a[i:i + CHUNK]).to(torch.float32, copy=True)  # never the mapped file
        y = _tensor(b[i:i + CHUNK]).to(torch.float32)
        aa, bb, ab = aa + float(x.dot(x)), bb + float(y.dot(y)), ab + float(x.dot(y))
        xs.append(x)
        ys.append(y)
    s0, s1, straight = slerp_coefficients(aa, bb, ab, t)
    target = torch.float16 if out is np.float16 else torch.float32
    while xs:
        x, y = xs.pop(0), ys.pop(0)
        r = torch.lerp(x, y, s1) if straight else x.mul_(s0).add_(y, alpha=s1)
        yield r.to(target).numpy()


def lerp(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], t: float, *,
         out: type[np.floating[Any]]) -> Iterator[np.ndarray[Any, Any]]:
    """``(1 - t) a + t b`` in float32, chunk by chunk, computed as ``a + t (b - a)``: a blend
    of a tensor with itself is that tensor exactly."""
    torch = _torch()
    target = torch.float16 if out is np.float16 else torch.float32
    for i in range(0, a.size, CHUNK):
        x = _tensor(a[i:i + CHUNK]).to(torch.float32)
        y = _tensor(b[i:i + CHUNK]).to(torch.float32)
        yield torch.lerp(x, y, t).to(target).numpy()
