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
#: weights per chunk where a pass casts to float32 and works on the copies (they stay cached)
CACHED = 1 << 18
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
    """SLERP needs the angle between the whole tensors before any weight: a first pass sums
    a·a, b·b and a·b, a second one casts again and blends. Chunks of ``CACHED`` weights stay
    in the CPU cache, so each pass costs about one read of the float16 inputs (keeping
    float32 copies between the passes costs more: four times the bytes go to memory)."""
    from core.workshop.merge_math import slerp_coefficients

    torch = _torch()
    aa = bb = ab = 0.0
    for i in range(0, a.size, CACHED):
        x = _tensor(a[i:i + CACHED]).to(torch.float32)
        y = _tensor(b[i:i + CACHED]).to(torch.float32)
        aa, bb, ab = aa + float(x.dot(x)), bb + float(y.dot(y)), ab + float(x.dot(y))
    s0, s1, straight = slerp_coefficients(aa, bb, ab, t)
    if straight:  # (nearly) parallel tensors: SLERP is a plain blend
        yield from lerp(a, b, s1, out=out)
        return
    target = torch.float16 if out is np.float16 else torch.float32
    for i in range(0, a.size, CACHED):
        x = _tensor(a[i:i + CACHED]).to(torch.float32, copy=True)  # never the mapped file
        y = _tensor(b[i:i + CACHED]).to(torch.float32)
        yield x.mul_(s0).add_(y, alpha=s1).to(target).numpy()


def lerp(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], t: float, *,
         out: type[np.floating[Any]]) -> Iterator[np.ndarray[Any, Any]]:
    """``(1 - t) a + t b`` in float32, chunk by chunk, computed as ``a + t (b - a)``: a blend
    of a tensor with itself is that tensor exactly. With both inputs already in the output
    type it is one pass: torch's CPU lerp on float16 computes in float32 and rounds once,
    the very bits of the cast-compute-cast path, at half the memory traffic."""
    torch = _torch()
    target = torch.float16 if out is np.float16 else torch.float32
    for i in range(0, a.size, CHUNK):
        x, y = _tensor(a[i:i + CHUNK]), _tensor(b[i:i + CHUNK])
        if x.dtype == y.dtype == target:
            yield torch.lerp(x, y, t).numpy()
        else:
            yield torch.lerp(x.to(torch.float32), y.to(torch.float32), t).to(target).numpy()
