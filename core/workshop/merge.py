"""Merge GGUF models: linear, SLERP, TIES, DARE, pass-through (layer stacking) and MoE.

Models must share architecture, vocabulary and tensor shapes; that is checked before anything
is written. Tensors stream one at a time (dequantize, merge in float32, write F16/BF16/F32)
into a temporary file that lands in the library only when complete (core.workshop.output).
The result keeps the first model's tokenizer and chat template and records its parents,
method and parameters in its metadata (``corral.merge.*``, ``general.base_model.*``).
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from core.errors import Cancelled, MergeRefused, ModelNotFound
from core.workshop import merge_stream
from core.workshop.merge_io import (
    ARRAY,
    BLOCK,
    Field,
    Planned,
    Source,
    kv_string,
    kv_strings,
    kv_u32,
    write_gguf,
)
from core.workshop.merge_math import (
    Array,
    cheap_embed_gate,
    linear,
    slerp,
    task_arithmetic,
)
from core.workshop.merge_plan import MergeSpec, evaluate

if TYPE_CHECKING:
    from core.config import Settings

_FILE_TYPES = {"f32": 0, "f16": 1, "bf16": 32}  # gguf.LlamaFileType
_FFN = ("ffn_gate", "ffn_up", "ffn_down")


class CancelFlag(Protocol):
    @property
    def cancelled(self) -> bool: ...


@dataclass(frozen=True)
class MergeResult:
    path: Path
    method: str
    parents: list[str]
    tensors: int
    blocks: int
    experts: int
    bytes: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def open_models(refs: Sequence[str], settings: Settings | None = None) -> list[Source]:
    """Resolve each Corral model reference to a GGUF on disk and open it (memory-mapped);
    the same file named twice is opened once."""
    from core.config import Settings
    from core.models.refs import resolve

    settings = settings or Settings()
    opened: dict[Path, Source] = {}
    out = []
    for ref in refs:
        model = resolve(ref, settings)
        if model.path is None:
            raise ModelNotFound(f"{model.display} runs on the Ollama server; Corral merges "
                                "GGUF files", hint=f"Use store:{model.name} (its file) instead.")
        if model.adapter is not None:
            raise MergeRefused(f"{model.display} is a base model plus a LoRA adapter; merging "
                               "its file alone would drop the adapter")
        if model.path not in opened:
            opened[model.path] = Source(str(ref), model.path, model.path.name)
        out.append(opened[model.path])
    return out


def _refuse_mismatch(first: Source, other: Source, *, tensors: bool) -> None:
    if other.arch != first.arch:
        raise MergeRefused(f"cannot merge {first.name} ({first.arch}) with {other.name} "
                           f"({other.arch}): the architectures differ")
    if first.fields.get("tokenizer.ggml.tokens") != other.fields.get("tokenizer.ggml.tokens"):
        a = list(first.value("tokenizer.ggml.tokens") or [])
        b = list(other.value("tokenizer.ggml.tokens") or [])
        where = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                     min(len(a), len(b)))
        raise MergeRefused(
            f"the vocabularies of {first.name} ({len(a)} tokens) and {other.name} "
            f"({len(b)} tokens) differ from token {where} on",
            hint="Merge models that share a tokenizer, such as fine-tunes of one base model.")
    if tensors:
        missing = sorted(set(first.tensors) ^ set(other.tensors))
        if missing:
            raise MergeRefused(f"{first.name} and {other.name} do not hold the same tensors "
                               f"(e.g. {missing[0]})")
        for name in first.tensors:
            if first.shape(name) != other.shape(name):
                raise MergeRefused(f"tensor {name} has shape {first.shape(name)} in "
                                   f"{first.name} but {other.shape(name)} in {other.name}")


def _position(name: str, blocks: int) -> float:
    """Where a tensor sits for gradient lists: 0 before the blocks, 1 after them."""
    m = BLOCK.fullmatch(name)
    if m:
        return int(m[1]) / (blocks - 1) if blocks > 1 else 1.0
    return 1.0 if name.startswith("output") else 0.0


def _one(fn: Callable[[], Array]) -> Callable[[], Iterator[Array]]:
    def parts() -> Iterator[Array]:
        yield fn()

    return parts


def _out_type(shape: tuple[int, ...], dtype: str) -> type[np.floating[Any]] | None:
    """The numpy type a tensor is written in, when the chunked path can make it."""
    if len(shape) == 1 or dtype == "f32":
        return np.float32
    return np.float16 if dtype == "f16" else None


def _copy(src: Source, name: str, dtype: str) -> Callable[[], Iterator[Array]]:
    def parts() -> Iterator[Array]:
        fl, out = merge_stream.flat(src.tensors[name]), _out_type(src.shape(name), dtype)
        if fl is not None and out is not None:
            yield from merge_stream.copy(fl, out)
        else:
            yield src.load(name)

    return parts


def _streamed(spec: MergeSpec, models: list[Source], name: str, pos: float
              ) -> Callable[[], Iterator[Array]] | None:
    """Linear or SLERP of two F16/F32 models (or one model alone), chunk by chunk; None
    when the whole-tensor path must do it."""
    two = len(models) == 2 and spec.weights is None
    if not (spec.method == "slerp" or (spec.method == "linear" and (two or len(models) == 1))):
        return None
    fa, fb = (merge_stream.flat(models[0].tensors[name]),
              merge_stream.flat(models[-1].tensors[name]))
    out = _out_type(models[0].shape(name), spec.dtype)
    if fa is None or fb is None or out is None:
        return None

    def parts() -> Iterator[Array]:
        t = evaluate(spec.t, name, pos) if len(models) == 2 else 0.0
        if t in (0.0, 1.0):
            yield from merge_stream.copy(fa if t == 0 else fb, out)
            return
        if spec.method == "slerp":
            yield from merge_stream.slerp(fa, fb, t, out=out)
        else:
            yield from merge_stream.lerp(fa, fb, t, out=out)

    return parts


def _plan_elementwise(spec: MergeSpec, models: list[Source], base: Source | None
                      ) -> list[Planned]:
    first = models[0]
    plan = []
    for index, name in enumerate(first.tensors):
        pos = _position(name, first.blocks)

        def make(name: str = name, pos: float = pos, index: int = index) -> Array:
            if spec.method == "slerp":
                return slerp(models[0].load(name), models[1].load(name),
                             evaluate(spec.t, name, pos))
            if spec.method == "linear":
                if spec.weights is None and len(models) == 2:
                    t = evaluate(spec.t, name, pos)
                    weights = [1.0 - t, t]
                else:
                    weights = spec.weights or [1.0] * len(models)
                return linear([m.load(name) for m in models], weights)
            assert base is not None
            b = base.load(name)
            others = [m for m in models if m.path != base.path]
            rng = np.random.default_rng([spec.seed, index])
            return task_arithmetic(b, [m.load(name) for m in others],
                                   spec.weights or [1.0] * len(others), density=spec.density,
                                   drop=spec.drop, consensus=spec.consensus, rng=rng)

        fast = _streamed(spec, models, name, pos)
        plan.append(Planned(name, first.shape(name), fast or _one(make)))
    return plan


def _layer_ranges(spec: MergeSpec, models: list[Source]) -> list[tuple[Source, int, int]]:
    out = []
    for s in spec.slices:
        m = models[s.model]
        end = m.blocks if s.end is None else s.end
        if not 0 <= s.start < end <= m.blocks:
            raise MergeRefused(f"layers {s.start}-{end} do not exist in {m.name}, which has "
                               f"{m.blocks} (0 to {m.blocks - 1})")
        out.append((m, s.start, end))
    return out


def _plan_passthrough(spec: MergeSpec, models: list[Source]) -> tuple[list[Planned], int]:
    ranges = _layer_ranges(spec, models)
    first, last = ranges[0][0], ranges[-1][0]
    template = {BLOCK.fullmatch(n)[2]: first.shape(n)  # type: ignore[index]
                for n in first.tensors if n.startswith("blk.0.")}
    pre = [n for n in first.tensors if not BLOCK.fullmatch(n) and not n.startswith("output")]
    post = [n for n in last.tensors if not BLOCK.fullmatch(n) and n.startswith("output")]
    for n in pre:
        for m, _s, _e in ranges:
            if n in m.tensors and m.shape(n) != first.shape(n):
                raise MergeRefused(f"tensor {n} has another shape in {m.name}")
    plan = [Planned(n, first.shape(n), _copy(first, n, spec.dtype)) for n in pre]
    new = 0
    for m, start, end in ranges:
        for layer in range(start, end):
            names = [n for n in m.tensors if n.startswith(f"blk.{layer}.")]
            parts = {BLOCK.fullmatch(n)[2]: n for n in names}  # type: ignore[index]
            if {p: m.shape(n) for p, n in parts.items()} != template:
                raise MergeRefused(f"layer {layer} of {m.name} does not have the tensors and "
                                   f"shapes of layer 0 of {first.name}")
            for part, src in parts.items():
                plan.append(Planned(f"blk.{new}.{part}", m.shape(src), _copy(m, src, spec.dtype)))
            new += 1
    plan += [Planned(n, last.shape(n), _copy(last, n, spec.dtype)) for n in post]
    return plan, new


def _default_tokenize(path: Path) -> Callable[[str], list[int]]:
    from core.models.pool import engine_pool

    client = engine_pool().engine(path, role="vocab")
    return lambda text: client.tokenize(text, add_bos=True)


def _router(spec: MergeSpec, base: Source, tokenize: Callable[[str], list[int]] | None
            ) -> Array:
    """The router rows, one per expert (the same for every layer, as mergekit does)."""
    n_embd = base.shape("token_embd.weight")[1]
    if spec.gate_mode == "random":
        return np.random.default_rng(spec.seed).standard_normal(
            (len(spec.experts), n_embd)).astype(np.float32)
    tok = tokenize or _default_tokenize(base.path)
    rows = []
    for expert in spec.experts:
        pos = [tok(p) for p in expert.positive]
        neg = [tok(p) for p in expert.negative]
        rows.append(cheap_embed_gate(lambda ids: base.rows("token_embd.weight", list(ids)),
                                     pos, neg))
    return np.stack(rows).astype(np.float32)


def _plan_moe(spec: MergeSpec, experts: list[Source], base: Source,
              tokenize: Callable[[str], list[int]] | None) -> list[Planned]:
    if base.arch != "llama":
        raise MergeRefused(f"MoE builds Mixtral-style llama models; {base.name} is "
                           f"{base.arch or 'of no known architecture'}")
    if any("_exps" in n for m in (base, *experts) for n in m.tensors):
        raise MergeRefused("one of the models is a mixture of experts already")
    for e in experts:
        if e.blocks != base.blocks:
            raise MergeRefused(f"{e.name} has {e.blocks} layers, {base.name} {base.blocks}")
    gates = _router(spec, base, tokenize)
    plan: list[Planned] = []
    for name in base.tensors:
        m = BLOCK.fullmatch(name)
        part = m[2].rsplit(".", 1)[0] if m else ""
        if part in _FFN:
            stacked = f"blk.{m[1]}.{part}_exps.weight"  # type: ignore[index]
            if part == "ffn_gate":
                plan.append(Planned(f"blk.{m[1]}.ffn_gate_inp.weight",  # type: ignore[index]
                                    gates.shape, _one(lambda: gates), float32=True))

            def stack(name: str = name) -> Iterator[Array]:
                for e in experts:
                    yield from _copy(e, name, spec.dtype)()

            plan.append(Planned(stacked, (len(experts), *base.shape(name)), stack))
        else:
            plan.append(Planned(name, base.shape(name), _copy(base, name, spec.dtype)))
    return plan


def _per_layer(f: Field, ranges: list[tuple[Source, int, int]], blocks: int) -> Field:
    """A per-layer list (one value per block) re-cut to follow the stacked layers."""
    values = f.value()
    if f.vtype != ARRAY or not isinstance(values, list) or len(values) != blocks \
            or not all(isinstance(v, int | float) for v in values):
        return f
    sub = struct.unpack_from("<I", f.raw)[0]
    picked = [values[min(i, blocks - 1)] for _m, s, e in ranges for i in range(s, e)]
    fmt = {4: "I", 5: "i", 6: "f"}.get(sub)
    if fmt is None:
        return f
    return Field(ARRAY, struct.pack(f"<IQ{len(picked)}{fmt}", sub, len(picked), *picked))


_DROPPED = ("general.quantization_version", "general.alignment", "general.base_model.",
            "corral.merge.")


def _metadata(first: Source, name: str, spec: MergeSpec, blocks: int, experts: int,
              parents: list[str], note: str, ranges: list[tuple[Source, int, int]]
              ) -> dict[str, Field]:
    """The first model's metadata (tokenizer, chat template, hyper-parameters) with what the
    merge changed and records: name, file type, layers, experts, parents, method, parameters."""
    arch = first.arch
    ours = {"general.architecture": kv_string(arch), "general.name": kv_string(name),
            "general.file_type": kv_u32(_FILE_TYPES[spec.dtype]),
            f"{arch}.block_count": kv_u32(blocks),
            "general.base_model.count": kv_u32(len(parents)),
            **{f"general.base_model.{i}.name": kv_string(p) for i, p in enumerate(parents)},
            "corral.merge.method": kv_string(spec.method),
            "corral.merge.parents": kv_strings(parents),
            "corral.merge.parameters": kv_string(json.dumps(spec.parameters(), sort_keys=True)),
            "corral.merge.tokenizer": kv_string(note)}
    if experts:
        ours[f"{arch}.expert_count"] = kv_u32(experts)
        ours[f"{arch}.expert_used_count"] = kv_u32(spec.experts_used)
    fields = {"general.architecture": ours.pop("general.architecture")}
    for key, f in first.fields.items():
        if key in ours:
            fields[key] = ours.pop(key)
        elif not key.startswith(_DROPPED):
            layered = ranges and key.startswith(f"{arch}.")
            fields[key] = _per_layer(f, ranges, first.blocks) if layered else f
    return {**fields, **ours}


def merge(spec: MergeSpec, out: Path | None, *, settings: Settings | None = None,
          progress: Callable[[int, int], None] | None = None, cancel: CancelFlag | None = None,
          tokenize: Callable[[str], list[int]] | None = None) -> MergeResult:
    """Run the merge into ``out`` (a file, a folder, or None: the library folder).
    ``progress(done_bytes, total_bytes)`` after each tensor; ``cancel.cancelled`` stops it
    (Cancelled, no file left). ``tokenize`` (MoE prompts) defaults to the base model's own
    tokenizer in a llama.cpp vocab engine."""
    from core.workshop.output import final_path, library_output

    started = time.monotonic()
    spec.check()
    sources = open_models([*spec.models, *([spec.base] if spec.base else [])], settings)
    models, base = sources[:len(spec.models)], sources[-1] if spec.base else None
    first = base if spec.method == "moe" and base is not None else models[0]
    everyone = [first, *models, *([base] if base is not None else [])]
    for m in everyone[1:]:
        _refuse_mismatch(first, m, tensors=spec.method not in ("passthrough", "moe"))
    blocks, experts = first.blocks, 0
    if spec.method == "passthrough":
        plan, blocks = _plan_passthrough(spec, models)
    elif spec.method == "moe":
        plan, experts = _plan_moe(spec, models, first, tokenize), len(models)
    else:
        plan = _plan_elementwise(spec, models, base)
    parents = [m.name for m in models]
    if base is not None and all(m.path != base.path for m in models):
        parents.append(f"{base.name} (base)")
    note = f"tokenizer and chat template taken from {first.name}"
    params = spec.parameters()
    stem = "-".join(dict.fromkeys(p.path.stem for p in models))[:60]
    default_name = f"{stem}-{spec.method}-{spec.dtype}.gguf"
    need = sum(p.nbytes(spec.dtype) for p in plan) + (32 << 20)
    provenance = {"kind": "merge", "method": spec.method, "parameters": params,
                  "parents": [str(m.path) for m in models],
                  "base": str(base.path) if base is not None else None, "tokenizer": note}

    def check() -> None:
        if cancel is not None and cancel.cancelled:
            raise Cancelled("merge cancelled; no file was left")

    check()
    ranges = _layer_ranges(spec, models) if spec.method == "passthrough" else []
    with library_output(out, default_name=default_name, need_bytes=need,
                        provenance=provenance) as tmp:
        final = final_path(tmp)
        with open(tmp, "wb") as fout, merge_stream.one_thread():
            fields = _metadata(first, final.stem, spec, blocks, experts, parents, note, ranges)
            written = write_gguf(fout, fields, plan, spec.dtype, progress, check)
    return MergeResult(final, spec.method, parents, len(plan), blocks, experts, written,
                       round(time.monotonic() - started, 3), [note])
