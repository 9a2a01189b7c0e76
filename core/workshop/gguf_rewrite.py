"""Read GGUF tensors as float32 and write float copies, one tensor at a time (``gguf`` package).

Used to dequantize a quantized model to F16 before it is quantized again, and to write the
ternarised model of the 1-bit view. Pure Python (no llama.cpp): a damaged file gives
ModelFileDamaged, a tensor type the dequantizer cannot read gives UnreadableTensorType,
both before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import Cancelled, CorralError, ModelFileDamaged, UnreadableTensorType

#: transform(tensor name, float32 weights) -> new float32 weights (same shape)
Transform = Callable[[str, np.ndarray], np.ndarray]
#: progress(fraction, text); a raised Cancelled stops the rewrite
Progress = Callable[[float, str], None]

F16_FILE_TYPE = 1  # llama_ftype LLAMA_FTYPE_MOSTLY_F16


@dataclass
class TensorEntry:
    name: str
    type_name: str
    shape: tuple[int, ...]  # numpy order (rows, columns)
    n_weights: int
    n_bytes: int


def open_reader(path: Path) -> Any:
    """A ``gguf.GGUFReader`` over ``path``; a file it cannot parse is ModelFileDamaged."""
    import gguf

    if not Path(path).is_file():
        from core.errors import ModelNotFound

        raise ModelNotFound(f"no such model file: {path}")
    try:
        return gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # the reader raises ValueError, struct errors, IndexError ...
        raise ModelFileDamaged(str(path), f"the gguf reader cannot parse it ({exc})") from None


def tensors(path: Path) -> list[TensorEntry]:
    """Every tensor of a GGUF with its type and shape (from the header: fast)."""
    from core.models.gguf_meta import read_gguf

    out = []
    for t in read_gguf(path).tensors:
        n = int(np.prod(t.shape)) if t.shape else 0
        out.append(TensorEntry(t.name, t.type_name, tuple(reversed(t.shape)), n, t.n_bytes))
    return out


def readable_type(type_name: str) -> bool:
    """Whether the ``gguf`` dequantizer reads this tensor type."""
    import gguf
    from gguf.quants import _type_traits

    kind = getattr(gguf.GGMLQuantizationType, type_name, None)
    return kind is not None and (kind.name in ("F32", "F16") or kind in _type_traits)


def _readable(type_value: Any) -> bool:
    return readable_type(type_value.name)


def check_readable(path: Path) -> None:
    """UnreadableTensorType naming the first tensor the dequantizer cannot read."""
    for t in tensors(path):
        if not readable_type(t.type_name):
            raise UnreadableTensorType(
                f"{Path(path).name}: tensor {t.name} is stored as {t.type_name}, which "
                "the dequantizer cannot read; nothing was written")


def as_float32(tensor: Any) -> np.ndarray:
    """One reader tensor as float32 in numpy order."""
    import gguf
    from gguf.quants import dequantize

    shape = tuple(int(d) for d in reversed(tensor.shape))
    kind = tensor.tensor_type
    if kind == gguf.GGMLQuantizationType.F32:
        data = np.asarray(tensor.data, dtype=np.float32)
    elif kind == gguf.GGMLQuantizationType.F16:
        data = np.asarray(tensor.data).astype(np.float32)
    else:
        try:
            data = dequantize(np.asarray(tensor.data), kind).astype(np.float32, copy=False)
        except NotImplementedError:
            raise UnreadableTensorType(f"tensor {tensor.name} is stored as {kind.name}, which "
                                       "the dequantizer cannot read") from None
    return data.reshape(shape)


def read_tensor(path: Path, name: str) -> np.ndarray:
    """The float32 weights of one tensor."""
    reader = open_reader(path)
    found = next((t for t in reader.tensors if t.name == name), None)
    if found is None:
        raise CorralError(f"{Path(path).name} has no tensor called {name}")
    if not _readable(found.tensor_type):
        raise UnreadableTensorType(f"tensor {name} is stored as {found.tensor_type.name}, which "
                                   "the dequantizer cannot read")
    return as_float32(found)


def _copy_metadata(reader: Any, writer: Any, file_type: int, extra: dict[str, str]) -> None:
    import gguf

    for field in reader.fields.values():
        if (field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF.")
                or field.name in (gguf.Keys.General.FILE_TYPE, "general.quantization_version")
                or field.name in extra):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    writer.add_file_type(file_type)
    for key, value in extra.items():
        writer.add_string(key, value)


def _stored_as_f16(name: str, shape: tuple[int, ...]) -> bool:
    # llama.cpp keeps 1-D tensors (norms, biases) in F32; matrices go to F16.
    return len(shape) >= 2


def write_float_copy(src: Path, dst: Path, *, transform: Transform | None = None,
                     extra_metadata: dict[str, str] | None = None,
                     progress: Progress | None = None) -> int:
    """Write ``dst``: every tensor of ``src`` as F16 (matrices) or F32 (vectors), optionally
    transformed. Returns the bytes written. ``progress`` may raise Cancelled."""
    import gguf

    check_readable(src)
    reader = open_reader(src)
    field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    arch = str(field.contents()) if field is not None else "llama"
    writer = gguf.GGUFWriter(str(dst), arch=arch, endianess=reader.endianess)
    try:
        _copy_metadata(reader, writer, F16_FILE_TYPE, extra_metadata or {})
        plan = []
        for t in reader.tensors:
            shape = tuple(int(d) for d in reversed(t.shape))
            dtype = np.float16 if _stored_as_f16(t.name, shape) else np.float32
            n = int(np.prod(shape))
            writer.add_tensor_info(t.name, shape, np.dtype(dtype), n * np.dtype(dtype).itemsize)
            plan.append((t, dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = max(1, sum(int(t.n_elements) for t, _ in plan))
        done = 0
        for i, (t, dtype) in enumerate(plan):
            if progress is not None:
                progress(done / total, f"tensor {i + 1}/{len(plan)}: {t.name}")
            data = as_float32(t)
            if transform is not None:
                data = transform(t.name, data)
            writer.write_tensor_data(np.ascontiguousarray(data, dtype=dtype))
            done += int(t.n_elements)
        if progress is not None:
            progress(1.0, "written")
    finally:
        writer.close()
    return Path(dst).stat().st_size


def float_copy_size(src: Path) -> int:
    """About how many bytes :func:`write_float_copy` writes for ``src``."""
    total = 0
    for t in tensors(src):
        total += t.n_weights * (2 if len(t.shape) >= 2 else 4)
    return total + (8 << 20)


def iter_tensor_types(path: Path) -> Iterator[tuple[str, str, int]]:
    """(name, type name, weights) of every tensor."""
    for t in tensors(path):
        yield t.name, t.type_name, t.n_weights


__all__ = ["Cancelled", "TensorEntry", "UnreadableTensorType", "as_float32", "check_readable",
           "float_copy_size", "iter_tensor_types", "open_reader", "read_tensor", "tensors",
           "write_float_copy"]
