"""Measure model variants: size, bits per weight, load time, speed, and on the user's text
perplexity plus the KL divergence and top-1 agreement of next-token distributions against
a reference (the first model), as llama.cpp's perplexity tool does in its KL-divergence mode.

llama.cpp runs in the engine child (op ``score``); the child writes each chunk's log-softmax
rows to a temporary .npy file and this module compares them with numpy.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import Cancelled, CorralError, EngineBusy, VocabularyMismatch
from core.workshop import gguf_rewrite
from core.workshop.quantize import resolve_source, source_type

if TYPE_CHECKING:
    from core.config import Settings

Progress = Callable[[float, str], None]
MIN_TOKENS = 16
#: llama-cpp-python decodes at most n_batch = 512 tokens at once: a chunk is one decode
MAX_CHUNK = 512


@dataclass
class VariantMeasure:
    ref: str
    path: str
    name: str
    file_type: str
    size: int
    n_weights: int
    bits_per_weight: float
    load_s: float = 0.0
    prompt_tps: float = 0.0
    gen_tps: float = 0.0
    tokens_scored: int = 0
    perplexity: float = math.nan
    kl_divergence: float | None = None  # mean KL(reference || this), nats per token
    top1_agreement: float | None = None  # share of positions whose top token matches
    ternary_share: float | None = None  # TQ1_0/TQ2_0 files: weights stored ternary
    is_reference: bool = False


@dataclass
class Evaluation:
    text_source: str
    tokens: int
    chunk: int
    variants: list[VariantMeasure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_facts(path: Path) -> tuple[int, int, float]:
    """(file size, weights, bits per weight of the tensor data)."""
    entries = gguf_rewrite.tensors(path)
    weights = sum(t.n_weights for t in entries)
    data = sum(t.n_bytes for t in entries)
    return path.stat().st_size, weights, (8.0 * data / weights) if weights else 0.0


def text_from_file(path: Path) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CorralError(f"cannot read the text file {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise CorralError(f"the text file {path} is empty")
    return text


def text_from_kb(name: str, settings: Settings) -> str:
    """The chunks of a knowledge base in document order, joined."""
    from core.rag.knowledge_base import open_kb

    kb = open_kb(name, settings=settings)
    try:
        parts: list[tuple[str, int, str]] = []
        for _ids, texts, metas, _e in kb.iter_chunks(embeddings=False):
            for text, meta in zip(texts, metas, strict=True):
                parts.append((str(meta.get("source", "")), int(meta.get("chunk_index", 0)), text))
    finally:
        kb.close()
    if not parts:
        raise CorralError(f"the knowledge base '{name}' holds no text",
                          hint="Add documents to it first.")
    return "\n\n".join(t for _s, _i, t in sorted(parts))


def kl_and_top1(ref_rows: np.ndarray, rows: np.ndarray) -> tuple[float, int, int]:
    """(sum of KL(ref || rows) over positions, positions whose top token agrees, positions)."""
    ref = ref_rows.astype(np.float64)
    mine = rows.astype(np.float64)
    kl = float((np.exp(ref) * (ref - mine)).sum())
    agree = int((ref.argmax(axis=1) == mine.argmax(axis=1)).sum())
    return kl, agree, len(ref)


def _score(client: Any, ids: Sequence[int], chunk: int, out: Path | None) -> dict[str, Any]:
    # EngineClient has no public wrapper for this workshop-only request.
    reply: dict[str, Any] = client._call({"op": "score", "ids": list(ids), "chunk": chunk,
                                          "out": str(out) if out else None})
    return reply


def _measure_one(ref: str, path: Path, ids_text: str, chunk: int, max_tokens: int,
                 gen_tokens: int, n_threads: int, work: Path, index: int,
                 reference_ids: list[int] | None, step: Progress) -> tuple[VariantMeasure,
                                                                          list[int], list[Path]]:
    from core.models.pool import engine_pool
    from core.workshop.ternary import ternary_share

    size, weights, bpw = file_facts(path)
    share = ternary_share(path)
    measure = VariantMeasure(ref=ref, path=str(path), name=path.name, file_type=source_type(path),
                             size=size, n_weights=weights, bits_per_weight=bpw,
                             ternary_share=share.share if share.ternary_weights else None,
                             is_reference=reference_ids is None)
    pool = engine_pool()
    try:
        pool.unload(path, "chat")  # a cold load, so the load time means something
    except EngineBusy:
        pass
    client = pool.engine(path, role="chat", n_ctx=chunk, n_threads=n_threads)
    files: list[Path] = []
    with client.in_use():
        step(0.0, f"loading {path.name}")
        started = time.perf_counter()
        info = client.load()
        measure.load_s = time.perf_counter() - started
        ids = client.tokenize(ids_text, add_bos=bool(info.get("add_bos")))[:max_tokens]
        if len(ids) < MIN_TOKENS:
            raise CorralError(f"the text is too short: {len(ids)} tokens, at least "
                              f"{MIN_TOKENS} are needed")
        chunk = min(chunk, len(ids))
        if reference_ids is not None and ids != reference_ids[:len(ids)]:
            raise VocabularyMismatch(f"{path.name} tokenizes the text differently from the "
                                     "reference model, so their next-token distributions "
                                     "cannot be compared")
        n_chunks = max(1, len(ids) // chunk)
        nll: list[float] = []
        spent, evaluated = 0.0, 0
        for k in range(n_chunks):
            step(k / (n_chunks + 1), f"{path.name}: chunk {k + 1}/{n_chunks}")
            out = work / f"{index}-{k}.npy"
            reply = _score(client, ids[k * chunk:(k + 1) * chunk], chunk, out)
            files.append(out)
            nll.extend(float(x) for x in reply["nll"])
            spent += float(reply["seconds"])
            evaluated += int(reply["evaluated"])
        measure.tokens_scored = len(nll)
        measure.perplexity = math.exp(sum(nll) / len(nll)) if nll else math.nan
        measure.prompt_tps = evaluated / spent if spent > 0 else 0.0
        step(n_chunks / (n_chunks + 1), f"{path.name}: generating {gen_tokens} tokens")
        if gen_tokens > 0:
            done = None
            for event in client.generate(ids[:MIN_TOKENS], max_tokens=gen_tokens,
                                         temperature=0.0, repeat_penalty=1.0):
                if event.done:
                    done = event
            if done is not None and done.total_s and done.first_token_s is not None:
                decode_s = done.total_s - done.first_token_s
                made = done.completion_tokens - 1
                measure.gen_tps = made / decode_s if made > 0 and decode_s > 0 else 0.0
    return measure, ids, files


def evaluate_models(refs: Sequence[str], text: str, *, text_source: str = "text",
                    n_ctx: int = 512, max_tokens: int = 1024, gen_tokens: int = 32,
                    n_threads: int | None = None, progress: Progress | None = None,
                    settings: Settings | None = None) -> Evaluation:
    """Measure every model; the first is the reference for KL divergence and top-1."""
    from core.models.engine import default_threads

    if not refs:
        raise CorralError("name at least one model to evaluate")
    paths = [resolve_source(r, settings) for r in refs]
    from core.models.gguf_meta import read_gguf

    for p in paths:
        read_gguf(p)  # a damaged file is refused before any engine starts
    report = progress or (lambda _f, _t: None)
    threads = n_threads or default_threads()
    chunk = max(MIN_TOKENS, min(int(n_ctx), MAX_CHUNK))
    work = Path(tempfile.mkdtemp(prefix="corral-evaluate-"))
    result: Evaluation | None = None
    try:
        ref_ids: list[int] | None = None
        ref_files: list[Path] = []
        variants: list[VariantMeasure] = []
        for i, (ref, path) in enumerate(zip(refs, paths, strict=True)):
            def step(f: float, t: str, i: int = i) -> None:
                report((i + f) / len(paths), t)

            measure, ids, files = _measure_one(ref, path, text, chunk, max_tokens, gen_tokens,
                                               threads, work, i, ref_ids, step)
            if ref_ids is None:
                ref_ids, ref_files = ids, files
                measure.kl_divergence, measure.top1_agreement = 0.0, 1.0
            else:
                kl = agree = count = 0.0
                for rf, mf in zip(ref_files, files, strict=True):
                    k, a, c = kl_and_top1(np.load(rf), np.load(mf))
                    kl, agree, count = kl + k, agree + a, count + c
                    mf.unlink(missing_ok=True)
                measure.kl_divergence = kl / count if count else None
                measure.top1_agreement = agree / count if count else None
            variants.append(measure)
            chunk = min(chunk, len(ids))
        report(1.0, "done")
        assert ref_ids is not None
        result = Evaluation(text_source=text_source, tokens=len(ref_ids), chunk=chunk,
                            variants=variants)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


__all__ = ["Cancelled", "Evaluation", "VariantMeasure", "VocabularyMismatch", "evaluate_models",
           "file_facts", "kl_and_top1", "text_from_file", "text_from_kb"]
