"""The 1-bit view: BitNet b1.58's absmean ternary rule applied to a normal model's weights.

For one tensor: its weight histogram, its ternary version (scale by the mean absolute weight,
round, clip to [-1, 1]) and the reconstruction error. For a whole model: every weight matrix
ternarised and written as F16 (so block sizes do not matter), measured before and after. For
TQ1_0/TQ2_0 files: the share of weights llama.cpp actually stored ternary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.workshop import gguf_rewrite
from core.workshop.output import final_path, library_output

Progress = Callable[[float, str], None]
TERNARY_TYPES = ("TQ1_0", "TQ2_0")
EPS = 1e-8

WHY_IT_FAILS = (
    "BitNet b1.58 models are trained ternary: every weight is in {-1, 0, 1} during training, so "
    "the network learns to work with three values. Rounding a normally trained model's weights "
    "after training throws away most of what they encode, so its perplexity rises steeply. "
    "This measures that honestly; it is not how a 1-bit model is made.")


@dataclass
class TensorView:
    name: str
    shape: tuple[int, ...]
    counts: list[int]  # the histogram of the weights
    edges: list[float]
    scale: float  # the mean absolute weight (BitNet's gamma)
    ternary_shares: dict[str, float]  # share of -1, 0 and +1 after ternarising
    relative_error: float  # ||W - scale * T|| / ||W||
    rmse: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TernaryShare:
    ternary_weights: int
    total_weights: int
    share: float
    by_type: dict[str, int] = field(default_factory=dict)  # weights stored per type


def absmean_ternary(weights: np.ndarray) -> tuple[np.ndarray, float]:
    """BitNet b1.58: scale = mean |W|; T = clip(round(W / scale), -1, 1) as int8."""
    w = np.asarray(weights, dtype=np.float32)
    scale = float(np.abs(w).mean()) if w.size else 0.0
    ternary = np.clip(np.rint(w / (scale + EPS)), -1, 1).astype(np.int8)
    return ternary, scale


def ternarise(weights: np.ndarray) -> np.ndarray:
    """The float weights that the ternary version stands for (scale * T)."""
    ternary, scale = absmean_ternary(weights)
    return (ternary.astype(np.float32) * np.float32(scale)).reshape(np.shape(weights))


def tensor_view(path: Path, name: str, *, bins: int = 101) -> TensorView:
    w = gguf_rewrite.read_tensor(path, name).astype(np.float32)
    ternary, scale = absmean_ternary(w)
    approx = ternary.astype(np.float32) * np.float32(scale)
    diff = float(np.linalg.norm((w - approx).ravel()))
    norm = float(np.linalg.norm(w.ravel()))
    counts, edges = np.histogram(w, bins=bins)
    n = max(1, ternary.size)
    shares = {str(v): float((ternary == v).sum()) / n for v in (-1, 0, 1)}
    return TensorView(name=name, shape=tuple(int(d) for d in w.shape),
                      counts=[int(c) for c in counts], edges=[float(e) for e in edges],
                      scale=scale, ternary_shares=shares,
                      relative_error=diff / norm if norm else 0.0,
                      rmse=diff / np.sqrt(n))


def matrix_names(path: Path) -> list[str]:
    """Tensors worth viewing: the weight matrices."""
    return [t.name for t in gguf_rewrite.tensors(path) if len(t.shape) >= 2]


def ternary_share(path: Path) -> TernaryShare:
    """How many of a file's weights are stored as TQ1_0/TQ2_0 (the rest fell back)."""
    counts: Counter[str] = Counter()
    for _name, kind, n in gguf_rewrite.iter_tensor_types(path):
        counts[kind] += n
    total = sum(counts.values())
    ternary = sum(counts[k] for k in TERNARY_TYPES)
    return TernaryShare(ternary, total, ternary / total if total else 0.0, dict(counts))


def _transform(name: str, data: np.ndarray) -> np.ndarray:
    # 1-D tensors are norm scales, not weights: BitNet keeps them in full precision too.
    return ternarise(data) if data.ndim >= 2 else data


def ternarise_model(src: Path, out: Path | None = None, *,
                    progress: Progress | None = None) -> Path:
    """Write every weight matrix of ``src`` ternarised (absmean, per tensor) as an F16 GGUF
    in the library; returns its path."""
    from core.models.gguf_meta import read_gguf, sha256_file

    read_gguf(src)
    gguf_rewrite.check_readable(src)
    provenance = {"kind": "ternarise", "type": "F16", "method": "absmean ternary (BitNet b1.58)",
                  "source": str(src), "source_sha256": sha256_file(src), "parents": [str(src)],
                  "parameters": {"scale": "per tensor mean |W|", "kept": "1-D tensors"}}
    stem = src.stem.split(".")[0]
    with library_output(out, default_name=f"{stem}.ternary-F16.gguf",
                        need_bytes=gguf_rewrite.float_copy_size(src),
                        provenance=provenance) as tmp:
        gguf_rewrite.write_float_copy(src, tmp, transform=_transform,
                                      extra_metadata={"corral.workshop.method": "absmean ternary"},
                                      progress=progress)
    return final_path(tmp)


__all__ = ["TERNARY_TYPES", "TensorView", "TernaryShare", "WHY_IT_FAILS", "absmean_ternary",
           "matrix_names", "tensor_view", "ternarise", "ternarise_model", "ternary_share"]
