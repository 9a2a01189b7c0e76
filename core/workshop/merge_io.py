"""Reading the models a merge starts from, and writing its result one tensor at a time.

Inputs are memory-mapped and each tensor is dequantized only when it is needed. Metadata is
read and copied as raw GGUF bytes (a 50k-token vocabulary costs milliseconds, not the seconds
``gguf.GGUFReader``/``GGUFWriter`` take to unpack and repack it). The output's header and
tensor table are written first, then every tensor as soon as it is merged, so memory stays
near the few tensors being combined.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.errors import MergeRefused, ModelFileDamaged
from core.workshop.merge_math import Array
from core.workshop.merge_stream import convert

BLOCK = re.compile(r"blk\.(\d+)\.(.+)")
ALIGN = 32
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}
U32, STRING, ARRAY = 4, 8, 9
_LIMIT = 1 << 24  # more keys or tensors than this is a damaged count, not a model


def readable_types() -> set[str]:
    """The tensor types gguf's dequantizer reads."""
    from gguf import quants

    return {"F32", "F16"} | {t.name for t in quants._type_traits}


@dataclass(frozen=True)
class Field:
    """One metadata value: its GGUF type and its bytes as stored (after the type)."""

    vtype: int
    raw: bytes

    def value(self) -> Any:
        return _Cursor(memoryview(self.raw)).value(self.vtype)


class _Cursor:
    def __init__(self, buf: memoryview, pos: int = 0) -> None:
        self.buf, self.pos = buf, pos

    def take(self, fmt: str) -> tuple[Any, ...]:
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return tuple(out)

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError("a length runs past the end of the file")
        self.pos += n

    def text(self) -> str:
        (n,) = self.take("<Q")
        start = self.pos
        self.skip(n)
        return bytes(self.buf[start:self.pos]).decode("utf-8", errors="replace")

    def skip_value(self, vtype: int) -> None:
        if vtype in _SCALAR:
            self.skip(struct.calcsize(_SCALAR[vtype]))
        elif vtype == STRING:
            self.skip(self.take("<Q")[0])
        elif vtype == ARRAY:
            sub, count = self.take("<IQ")
            if sub in _SCALAR:
                self.skip(struct.calcsize(_SCALAR[sub]) * count)
            elif sub == STRING:  # a vocabulary: 50k strings, so a tight loop
                pos, buf, unpack = self.pos, self.buf, struct.unpack_from
                for _ in range(count):
                    pos += 8 + unpack("<Q", buf, pos)[0]
                self.skip(pos - self.pos)
            else:
                for _ in range(count):
                    self.skip_value(sub)
        else:
            raise ValueError(f"unknown metadata type {vtype}")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR:
            return self.take(_SCALAR[vtype])[0]
        if vtype == STRING:
            return self.text()
        sub, count = self.take("<IQ")
        if sub in _SCALAR:
            arr = np.frombuffer(self.buf, dtype=np.dtype(_SCALAR[sub]), count=count,
                                offset=self.pos)
            self.pos += arr.nbytes
            return arr.tolist()
        return [self.value(sub) for _ in range(count)]


class Source:
    """One input model, memory-mapped; a damaged file is refused here (ModelFileDamaged)."""

    def __init__(self, ref: str, path: Path, display: str) -> None:
        self.ref, self.path, self.display = ref, path, display
        try:
            self.mm = np.memmap(path, dtype=np.uint8, mode="r")
            self._read(self.mm.data)
        except (ValueError, KeyError, IndexError, OverflowError, struct.error) as exc:
            raise ModelFileDamaged(str(path), f"unreadable GGUF: {exc}") from None
        self.arch = str(self.value("general.architecture") or "")
        self.blocks = int(self.value(f"{self.arch}.block_count") or 0)
        ok = readable_types()
        for name, (qtype, _shape, _data) in self.tensors.items():
            if qtype.name not in ok:
                raise MergeRefused(
                    f"{self.display}: tensor {name} is stored as {qtype.name}, "
                    "which Corral's dequantizer cannot read",
                    hint="Convert the model to F16 or Q8_0 with llama.cpp first.")

    def _read(self, buf: memoryview) -> None:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        c = _Cursor(buf)
        magic, version, n_tensors, n_kv = c.take("<4sIQQ")
        if magic != b"GGUF" or version not in (2, 3):
            raise ValueError("not a GGUF v2/v3 file")
        if n_tensors > _LIMIT or n_kv > _LIMIT:
            raise ValueError("absurd counts in the header")
        self.fields: dict[str, Field] = {}
        for _ in range(n_kv):
            key = c.text()
            (vtype,) = c.take("<I")
            start = c.pos
            c.skip_value(vtype)
            self.fields[key] = Field(vtype, bytes(buf[start:c.pos]))
        table = []
        for _ in range(n_tensors):
            name = c.text()
            (n_dims,) = c.take("<I")
            ne = c.take("<" + "Q" * n_dims)
            ttype, offset = c.take("<IQ")
            table.append((name, ne, ttype, offset))
        align = int(self.value("general.alignment") or ALIGN)
        data_start = (c.pos + align - 1) // align * align
        self.tensors: dict[str, tuple[GGMLQuantizationType, tuple[int, ...], Any]] = {}
        for name, ne, ttype, offset in table:
            qtype = GGMLQuantizationType(ttype)
            block, size = GGML_QUANT_SIZES[qtype]
            shape = tuple(int(x) for x in reversed(ne))
            row_bytes = ne[0] // block * size
            n_rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
            start = data_start + offset
            if start + n_rows * row_bytes > len(buf):
                raise ValueError(f"tensor {name} runs past the end of the file (truncated?)")
            data = self.mm[start:start + n_rows * row_bytes]
            self.tensors[name] = (qtype, shape, data.reshape(n_rows, row_bytes))

    @property
    def name(self) -> str:
        return self.path.name

    def value(self, key: str) -> Any:
        f = self.fields.get(key)
        return None if f is None else f.value()

    def shape(self, name: str) -> tuple[int, ...]:
        """numpy order (the last axis is ggml's ``ne[0]``)."""
        return self.tensors[name][1]

    def load(self, name: str) -> Array:
        """The tensor in float32, dequantized."""
        from gguf import GGMLQuantizationType, quants

        qtype, shape, data = self.tensors[name]
        if qtype == GGMLQuantizationType.F32:
            return np.asarray(data.view(np.float32), dtype=np.float32).reshape(shape)
        if qtype == GGMLQuantizationType.F16:
            return convert(data.view(np.float16), np.float32).reshape(shape)
        return np.asarray(quants.dequantize(data, qtype), dtype=np.float32).reshape(shape)

    def rows(self, name: str, ids: list[int]) -> Array:
        """Some rows of a matrix (token embeddings), dequantized alone."""
        from gguf import quants

        qtype, shape, data = self.tensors[name]
        return np.asarray(quants.dequantize(data[ids], qtype), dtype=np.float32).reshape(
            len(ids), shape[-1])


@dataclass
class Planned:
    """One output tensor: its name, shape (numpy order), and the parts that make it up, in
    order (one array, chunks of it, or the experts of an MoE tensor)."""

    name: str
    shape: tuple[int, ...]
    parts: Callable[[], Iterator[Array]]
    float32: bool = False  #: norms and router gates stay F32 whatever the output type

    def stored(self, dtype: str) -> str:
        return "f32" if self.float32 or len(self.shape) == 1 else dtype

    def nbytes(self, dtype: str) -> int:
        return int(np.prod(self.shape)) * (4 if self.stored(dtype) == "f32" else 2)


def _encode(x: np.ndarray[Any, Any], stored: str) -> np.ndarray[Any, Any]:
    if stored == "f32":
        return np.ascontiguousarray(x, dtype=np.float32)
    if stored == "f16":
        return np.ascontiguousarray(convert(x, np.float16))
    from gguf import GGMLQuantizationType, quants

    return np.ascontiguousarray(quants.quantize(np.asarray(x, dtype=np.float32),
                                                GGMLQuantizationType.BF16))


# --- writing -----------------------------------------------------------------------------


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def kv_string(text: str) -> Field:
    return Field(STRING, _string(text))


def kv_u32(n: int) -> Field:
    return Field(U32, struct.pack("<I", n))


def kv_strings(items: Sequence[str]) -> Field:
    return Field(ARRAY, struct.pack("<IQ", STRING, len(items))
                 + b"".join(_string(s) for s in items))


_GGML = {"f32": 0, "f16": 1, "bf16": 30}  # GGMLQuantizationType


def write_gguf(fout: IO[bytes], fields: dict[str, Field], plan: list[Planned], dtype: str,
               progress: Callable[[int, int], None] | None,
               check: Callable[[], None]) -> int:
    """Write header, metadata and tensor table, then each tensor as soon as it is made.
    ``check`` raises to stop (a cancel); returns the bytes of tensor data written."""
    head = [b"GGUF", struct.pack("<IQQ", 3, len(plan), len(fields))]
    for key, f in fields.items():
        head += [_string(key), struct.pack("<I", f.vtype), f.raw]
    offset = 0
    for p in plan:
        head += [_string(p.name), struct.pack("<I", len(p.shape)),
                 struct.pack(f"<{len(p.shape)}Q", *reversed(p.shape)),
                 struct.pack("<IQ", _GGML[p.stored(dtype)], offset)]
        offset += -(-p.nbytes(dtype) // ALIGN) * ALIGN
    header = b"".join(head)
    fout.write(header + b"\0" * (-len(header) % ALIGN))
    total, done = sum(p.nbytes(dtype) for p in plan), 0
    for p in plan:
        check()
        stored, written = p.stored(dtype), 0
        for part in p.parts():
            data = _encode(part, stored)
            fout.write(data.data.cast("B"))  # a short write raises (EFBIG, ENOSPC)
            written += data.nbytes
            del data, part
            check()
        if written != p.nbytes(dtype):
            raise RuntimeError(f"{p.name}: wrote {written} bytes, expected {p.nbytes(dtype)}")
        fout.write(b"\0" * (-written % ALIGN))
        done += written
        if progress is not None:
            progress(done, total)
    fout.flush()
    return done
