"""Read a GGUF file's header, metadata and tensor table without loading weights (FORMATS 6).

The reader is defensive: every count and length in the file is checked against the bytes that
are actually left before anything is allocated, so a hostile or damaged file costs a
``ModelFileDamaged`` with a reason, never a crash or a huge allocation.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.errors import ModelFileDamaged

_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<B", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_BOOL, _STRING, _ARRAY = 7, 8, 9
MAX_KV = 1_000_000
MAX_TENSORS = 10_000_000
MAX_DIMS = 4
MAX_NESTING = 3
ARRAY_PREVIEW = 8  # items of an array kept for display

#: general.file_type (llama_ftype) -> name, FORMATS 6.2 (llama.h list).
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_1_SOME_F16", 5: "Q4_2", 6: "Q4_3",
    7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L",
    14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS",
    20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    33: "Q4_0_4_4", 34: "Q4_0_4_8", 35: "Q4_0_8_8", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
    39: "NVFP4", 40: "Q1_0", 41: "Q2_0", 1024: "GUESSED",
}

#: ggml tensor type -> (name, elements per block, bytes per block) (ggml.h / gguf-py).
TENSOR_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}


def file_type_name(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return FILE_TYPES.get(value, f"unknown ({value})")
    return ""


def format_parameters(n: int) -> str:
    """7241732096 -> '7.2B', 124439808 -> '124M' (like Ollama's parameter_size)."""
    if n <= 0:
        return ""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            value = n / div
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int
    n_bytes: int


@dataclass
class GGUFInfo:
    """What the header says about a model file."""

    path: Path
    version: int
    tensor_count: int
    kv_count: int
    metadata: dict[str, Any]  # arrays are summarised: see ``array_lengths``
    array_lengths: dict[str, int]
    file_size: int
    data_offset: int
    data_size: int  # bytes of tensor data the tensor table declares
    parameter_count: int
    tensor_types: dict[str, int] = field(default_factory=dict)  # type name -> tensor count
    #: the tensor table (shapes in ggml order: ne[0] first)
    tensors: list[TensorInfo] = field(default_factory=list, repr=False)

    # --- the fields people ask for -----------------------------------------------------

    def _get(self, key: str) -> Any:
        return self.metadata.get(key)

    def _arch(self, suffix: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{suffix}")

    @property
    def architecture(self) -> str:
        return str(self._get("general.architecture") or "")

    @property
    def name(self) -> str:
        return str(self._get("general.name") or "")

    @property
    def context_length(self) -> int | None:
        return _int(self._arch("context_length"))

    @property
    def embedding_length(self) -> int | None:
        return _int(self._arch("embedding_length"))

    @property
    def block_count(self) -> int | None:
        return _int(self._arch("block_count"))

    @property
    def head_count(self) -> int | None:
        return _int(self._arch("attention.head_count"))

    @property
    def head_count_kv(self) -> int | None:
        return _int(self._arch("attention.head_count_kv"))

    @property
    def file_type(self) -> int | None:
        return _int(self._get("general.file_type"))

    @property
    def quantization(self) -> str:
        """The file type name (Q4_K_M ...), or the commonest tensor type when undeclared."""
        if self.file_type is not None:
            return file_type_name(self.file_type)
        weights = {k: v for k, v in self.tensor_types.items() if k not in ("F32",)}
        pool = weights or self.tensor_types
        return max(pool, key=lambda k: pool[k]) if pool else ""

    @property
    def parameter_size(self) -> str:
        label = self._get("general.size_label")
        return str(label) if label else format_parameters(self.parameter_count)

    @property
    def tokenizer_model(self) -> str:
        return str(self._get("tokenizer.ggml.model") or "")

    @property
    def vocab_size(self) -> int | None:
        n = self.array_lengths.get("tokenizer.ggml.tokens")
        return n if n is not None else _int(self._arch("vocab_size"))

    @property
    def chat_template(self) -> str | None:
        value = self._get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    def summary(self) -> dict[str, Any]:
        """The fields the Models page and ``corral models inspect`` show."""
        return {
            "path": str(self.path), "gguf_version": self.version,
            "architecture": self.architecture, "name": self.name,
            "parameter_count": self.parameter_count, "parameter_size": self.parameter_size,
            "context_length": self.context_length, "embedding_length": self.embedding_length,
            "block_count": self.block_count, "head_count": self.head_count,
            "head_count_kv": self.head_count_kv, "quantization": self.quantization,
            "tokenizer_model": self.tokenizer_model, "vocab_size": self.vocab_size,
            "tensor_count": self.tensor_count, "file_size": self.file_size,
            "chat_template": self.chat_template,
        }


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Reader:
    """Bounded reads from a file: every length is checked against the bytes left."""

    def __init__(self, fh: IO[bytes], size: int, path: Path) -> None:
        self.fh = fh
        self.size = size
        self.path = path

    def damaged(self, reason: str) -> ModelFileDamaged:
        return ModelFileDamaged(str(self.path), reason)

    @property
    def left(self) -> int:
        return self.size - self.fh.tell()

    def read(self, n: int, what: str = "header") -> bytes:
        if n > self.left:
            raise self.damaged(f"incomplete file: it ends inside the {what}")
        data = self.fh.read(n)
        if len(data) != n:
            raise self.damaged(f"incomplete file: it ends inside the {what}")
        return data

    def skip(self, n: int, what: str) -> None:
        if n > self.left:
            raise self.damaged(f"incomplete file: it ends inside the {what}")
        self.fh.seek(n, 1)

    def skip_strings(self, n: int, what: str) -> None:
        """Skip ``n`` length-prefixed strings, reading the file in bounded windows."""
        window = 1 << 20
        pos = self.fh.tell()
        buf = b""
        base = pos  # file offset of buf[0]
        unpack = struct.unpack_from
        for _ in range(n):
            if pos + 8 > base + len(buf):
                self.fh.seek(pos)
                base, buf = pos, self.fh.read(window)
                if len(buf) < 8:
                    raise self.damaged(f"incomplete file: it ends inside the {what}")
            length = unpack("<Q", buf, pos - base)[0]
            pos += 8 + length
            if pos > self.size:
                raise self.damaged(f"incomplete or damaged file: a string in the {what} claims "
                                   f"{length} bytes, more than the file holds")
        self.fh.seek(pos)

    def u32(self, what: str = "header") -> int:
        return int(struct.unpack("<I", self.read(4, what))[0])

    def u64(self, what: str = "header") -> int:
        return int(struct.unpack("<Q", self.read(8, what))[0])

    def string(self, what: str) -> str:
        n = self.u64(what)
        if n > self.left:
            raise self.damaged(f"incomplete or damaged file: a string in the {what} claims {n} "
                               "bytes, more than the file holds")
        return self.read(n, what).decode("utf-8", errors="replace")

    def value(self, vtype: int, key: str, depth: int = 0) -> tuple[Any, int | None]:
        """(value, array length or None); arrays come back as a short preview list."""
        where = f"metadata value of {key!r}"
        if vtype in _SCALARS:
            fmt, size = _SCALARS[vtype]
            raw = struct.unpack(fmt, self.read(size, where))[0]
            return (bool(raw) if vtype == _BOOL else raw), None
        if vtype == _STRING:
            return self.string(where), None
        if vtype == _ARRAY:
            if depth >= MAX_NESTING:
                raise self.damaged(f"arrays nested too deeply in {key!r}")
            etype = self.u32(where)
            n = self.u64(where)
            min_item = _SCALARS[etype][1] if etype in _SCALARS else 8 if etype == _STRING else 12
            if etype not in _SCALARS and etype not in (_STRING, _ARRAY):
                raise self.damaged(f"unknown array element type {etype} in {key!r}")
            if n * min_item > self.left:
                raise self.damaged(f"incomplete or damaged file: array {key!r} claims {n} items, "
                                   "more than the file holds")
            preview: list[Any] = []
            if etype in _SCALARS:
                size = _SCALARS[etype][1]
                keep = min(n, ARRAY_PREVIEW)
                for _ in range(keep):
                    preview.append(self.value(etype, key, depth + 1)[0])
                self.skip((n - keep) * size, where)
                return preview, n
            keep = min(n, ARRAY_PREVIEW)
            for _ in range(keep):
                preview.append(self.value(etype, key, depth + 1)[0])
            if etype == _STRING:
                self.skip_strings(n - keep, where)
            else:
                for _ in range(n - keep):
                    self.value(etype, key, depth + 1)
            return preview, n
        raise self.damaged(f"unknown metadata value type {vtype} for {key!r}")


#: headers already read, by (path, device, inode, size, mtime, check_size), with a digest of
#: the header's bytes (a file rewritten in place within the clock's tick keeps its mtime): a
#: job asks for the same file's header several times, and a vocabulary of 49k tokens takes
#: ~0.1 s to parse but ~2 ms to hash
_read: OrderedDict[tuple[Any, ...], tuple[GGUFInfo, bytes]] = OrderedDict()
_read_lock = threading.Lock()
_READ_KEEP = 16


def read_gguf(path: str | Path, *, check_size: bool = True) -> GGUFInfo:
    """Read header, metadata and tensor table. Raise ModelFileDamaged with a reason.
    The answer is kept while the file is unchanged (same inode, size and mtime): treat it as
    read-only."""
    p = Path(path)
    try:
        fh = p.open("rb")
        st = os.fstat(fh.fileno())
    except FileNotFoundError:
        raise ModelFileDamaged(str(p), "no such file") from None
    except IsADirectoryError:
        raise ModelFileDamaged(str(p), "it is a folder, not a file") from None
    except OSError as exc:
        raise ModelFileDamaged(str(p), f"cannot read it: {exc.strerror or exc}") from None
    key = (str(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, check_size)
    with fh:
        with _read_lock:
            known = _read.get(key)
        if known is not None and _header_digest(fh, known[0].data_offset) == known[1]:
            with _read_lock:
                if key in _read:
                    _read.move_to_end(key)
            return known[0]
        fh.seek(0)
        info = _parse(_Reader(fh, st.st_size, p), check_size)
        digest = _header_digest(fh, info.data_offset)
    with _read_lock:
        _read[key] = (info, digest)
        while len(_read) > _READ_KEEP:
            _read.popitem(last=False)
    return info


def _header_digest(fh: IO[bytes], size: int) -> bytes:
    fh.seek(0)
    return hashlib.blake2b(fh.read(size), digest_size=16).digest()


def _parse(r: _Reader, check_size: bool) -> GGUFInfo:
    if r.size == 0:
        raise r.damaged("the file is empty (zero bytes)")
    magic = r.fh.read(4)
    if magic != b"GGUF":
        if magic[:4][::-1] == b"GGUF":
            raise r.damaged("big-endian GGUF files are not supported")
        raise r.damaged(f"not a GGUF file (it starts with {magic[:4]!r}, not b'GGUF')")
    version = r.u32()
    if version == 1:
        raise r.damaged("GGUF version 1 is too old; convert the model again")
    if version not in (2, 3):
        if version in (0x02000000, 0x03000000):
            raise r.damaged("big-endian GGUF files are not supported")
        raise r.damaged(f"unsupported GGUF version {version}")
    n_tensors = r.u64()
    n_kv = r.u64()
    # Each KV takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor 8 + 4 + 4 + 8.
    if n_kv > MAX_KV or n_kv * 13 > r.left:
        raise r.damaged(f"incomplete or damaged file: the header claims {n_kv} metadata "
                        "entries, more than the file holds")
    if n_tensors > MAX_TENSORS or n_tensors * 24 > r.left:
        raise r.damaged(f"incomplete or damaged file: the header claims {n_tensors} tensors, "
                        "more than the file holds")
    metadata: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for _ in range(n_kv):
        key = r.string("metadata keys")
        if key in metadata:
            raise r.damaged(f"metadata key {key!r} appears twice")
        vtype = r.u32("metadata")
        value, n = r.value(vtype, key)
        metadata[key] = value
        if n is not None:
            lengths[key] = n
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or (
            alignment & (alignment - 1)) or alignment > 1 << 20:
        raise r.damaged(f"general.alignment is {alignment!r}, not a power of two")
    tensors = _read_tensors(r, n_tensors, alignment)
    table_end = r.fh.tell()
    data_offset = (table_end + alignment - 1) // alignment * alignment
    data_size = max((t.offset + t.n_bytes for t in tensors), default=0)
    types: dict[str, int] = {}
    params = 0
    for t in tensors:
        types[t.type_name] = types.get(t.type_name, 0) + 1
        n = 1
        for d in t.shape:
            n *= d
        params += n
    info = GGUFInfo(path=r.path, version=version, tensor_count=n_tensors, kv_count=n_kv,
                    metadata=metadata, array_lengths=lengths, file_size=r.size,
                    data_offset=data_offset, data_size=data_size, parameter_count=params,
                    tensor_types=types, tensors=tensors)
    if check_size:
        check_complete(info)
    return info


def _read_tensors(r: _Reader, n_tensors: int, alignment: int) -> list[TensorInfo]:
    tensors: list[TensorInfo] = []
    for i in range(n_tensors):
        name = r.string("tensor table")
        n_dims = r.u32("tensor table")
        if not 1 <= n_dims <= MAX_DIMS:
            raise r.damaged(f"tensor {name!r} claims {n_dims} dimensions")
        shape = tuple(r.u64("tensor table") for _ in range(n_dims))
        ttype = r.u32("tensor table")
        offset = r.u64("tensor table")
        if ttype not in TENSOR_TYPES:
            raise r.damaged(f"tensor {name!r} has unknown type {ttype}")
        tname, block, type_size = TENSOR_TYPES[ttype]
        elements = 1
        for d in shape:
            if d == 0 or d > 1 << 40:
                raise r.damaged(f"tensor {name!r} has an impossible size {list(shape)}")
            elements *= d
        if elements > 1 << 50:
            raise r.damaged(f"tensor {name!r} has an impossible size {list(shape)}")
        if shape[0] % block:
            raise r.damaged(f"tensor {name!r} rows do not fit its {tname} blocks")
        if offset % alignment:
            raise r.damaged(f"tensor {name!r} is not aligned to {alignment} bytes")
        tensors.append(TensorInfo(name, shape, tname, offset, elements // block * type_size))
        del i
    return tensors


def check_complete(info: GGUFInfo) -> None:
    """Raise ModelFileDamaged('incomplete file, N% present') if tensor data is cut short."""
    needed = info.data_offset + info.data_size
    if needed > 1 << 42:  # 4 TiB: a damaged tensor table, not a cut download
        raise ModelFileDamaged(str(info.path), f"damaged tensor table: it declares {needed:,} "
                                               "bytes of tensor data, more than any model has")
    if info.file_size < needed:
        pct = int(info.file_size * 100 / needed) if needed else 0
        raise ModelFileDamaged(
            str(info.path),
            f"incomplete file, {pct}% present ({info.file_size:,} of {needed:,} bytes); "
            "the download was probably interrupted",
        )


def sha256_file(path: str | Path, progress: Callable[[int, int], None] | None = None,
                chunk: int = 4 << 20) -> str:
    """Hex SHA-256 of a file; ``progress(done, total)`` after each chunk."""
    p = Path(path)
    total = p.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with p.open("rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def template_problem(template: str | None, *, timeout_s: float = 2.0) -> str | None:
    """Why a model's chat template is unsafe ("it recurses without end"), or None (FORMATS 6.5,
    CVE-2024-34359).

    The check is the chat renderer itself (core.prompts.template): the same sandbox, limits
    and reasons, rendering a short sample conversation in the calling thread within
    ``timeout_s``, so a template that loops forever leaves nothing running. A template that
    merely fails on the sample conversation (``raise_exception`` ...) is not reported.
    """
    if not template:
        return None
    from core.prompts.template import refusal_reason

    reason = refusal_reason(template, time_limit_s=timeout_s)
    return None if reason is None else f"it {reason}"
