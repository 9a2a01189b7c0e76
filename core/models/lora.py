"""Check a LoRA adapter GGUF against its base model before llama.cpp applies it.

llama.cpp makes the same checks when it loads an adapter (llama-adapter.cpp), but the
llama-cpp-python build Corral uses goes on with a refused adapter and crashes at the first
token; so an adapter reaches the engine only after it passed here, read with the header
reader (no weights, nothing native), and anything amiss is a ModelFileDamaged naming it.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import ModelFileDamaged
from core.models.gguf_meta import TensorInfo, read_gguf

_A, _B = ".lora_a", ".lora_b"


def check_lora(adapter: Path, base: Path, what: str) -> None:
    """Raise ModelFileDamaged(``what``, reason) unless ``adapter`` is a LoRA GGUF that fits
    ``base``: general.type "adapter", adapter.type "lora", the same architecture, and for
    every base tensor it adapts a ``.lora_a``/``.lora_b`` pair whose shapes fit it."""
    try:
        info = read_gguf(adapter)
    except ModelFileDamaged as exc:
        raise ModelFileDamaged(what, exc.reason) from None
    meta = info.metadata
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise ModelFileDamaged(what, "it is not a LoRA adapter GGUF (general.type "
                                     f"{meta.get('general.type')!r}, adapter.type "
                                     f"{meta.get('adapter.type')!r})")
    model = read_gguf(base)
    arch = str(meta.get("general.architecture") or "")
    if arch != model.architecture:
        raise ModelFileDamaged(what, f"it was made for a {arch or 'unnamed'} model, and this "
                                     f"model is {model.architecture or 'unnamed'}")
    pairs: dict[str, dict[str, TensorInfo]] = {}
    for t in info.tensors:
        if t.name.endswith((_A, _B)):
            pairs.setdefault(t.name[:-len(_A)], {})[t.name[-1]] = t
        elif not t.name.endswith("_norm.weight"):  # llama.cpp skips norms too
            raise ModelFileDamaged(what, f"it holds a tensor {t.name!r} that is no LoRA part")
    if not pairs:
        raise ModelFileDamaged(what, "it adapts no tensor")
    weights = {t.name: t for t in model.tensors}
    for name, pair in sorted(pairs.items()):
        a, b, w = pair.get("a"), pair.get("b"), weights.get(name)
        if a is None or b is None:
            raise ModelFileDamaged(what, f"the LoRA pair for {name!r} lacks a part")
        if w is None:
            raise ModelFileDamaged(what, f"it adapts {name!r}, which this model does not have "
                                         "(an adapter for another model?)")
        if not _fits(name, a.shape, b.shape, w.shape):
            raise ModelFileDamaged(what, f"its shapes for {name!r} do not fit this model "
                                         "(an adapter for another model?)")


def _fits(name: str, a: tuple[int, ...], b: tuple[int, ...], w: tuple[int, ...]) -> bool:
    """The shape rules of llama.cpp's adapter loader (ggml order: ne[0] first)."""
    if len(a) != 2 or len(b) != 2 or len(w) < 2:
        return False
    if name.endswith("token_embd.weight"):  # B not transposed, A and B swapped
        return w[0] == b[1] and w[1] == a[1]
    return w[0] == a[0] and w[1] == b[1] and a[1] == b[0]
