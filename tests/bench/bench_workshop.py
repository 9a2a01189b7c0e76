"""Benchmarks of the Workshop (a script: it prints, it asserts nothing).

1. Quantize: Corral's `quantize` (child process, progress, temporary file, check, rename,
   library registration, source and output SHA-256) against raw `llama_model_quantize` on the
   same F16 file with the same threads. Target: >= 0.95x.
2. Perplexity: tokens/s of Corral's scoring (engine child, op `score`, log-softmax rows saved
   for KL) against a raw llama-cpp-python loop doing the same chunks in this process
   (logits_all, log-softmax of the scored half). Target: >= 0.9x.

Run: python tests/bench/bench_workshop.py [SRC.gguf] [--type Q4_K_M] [--threads N]
(SRC defaults to the SmolLM2 test model, dequantized to F16 once into a temporary folder.)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def raw_quantize(src: Path, dst: Path, ftype: int, threads: int) -> float:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    started = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                        ctypes.byref(params))
    assert rc == 0, rc
    return time.perf_counter() - started


def bench_quantize(src: Path, kind: str, threads: int, work: Path) -> None:
    from core.workshop.quantize import TYPES, quantize

    raw = min(raw_quantize(src, work / f"raw{i}.gguf", TYPES[kind][0], threads) for i in range(2))
    times = []
    for i in range(2):
        started = time.perf_counter()
        quantize(src, kind, work / f"corral{i}.gguf", n_threads=threads)
        times.append(time.perf_counter() - started)
    corral = min(times)
    print(f"quantize {src.name} -> {kind}, {threads} threads: raw {raw:.2f} s, "
          f"Corral {corral:.2f} s, ratio {raw / corral:.2f}x (target >= 0.95x)")


def bench_perplexity(model: Path, text: str, chunk: int, threads: int, work: Path) -> None:
    from llama_cpp import Llama

    from core.models.pool import close_all, engine_pool
    from core.workshop.measure import _score

    llm = Llama(model_path=str(model), n_ctx=chunk, n_batch=chunk, n_threads=threads,
                n_threads_batch=threads, logits_all=True, verbose=False)
    ids = llm.tokenize(text.encode(), add_bos=False)
    n = len(ids) // chunk
    started = time.perf_counter()
    for k in range(n):
        part = ids[k * chunk:(k + 1) * chunk]
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(part)
        logits = np.asarray(llm.scores[chunk // 2:chunk - 1], dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        _ = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    raw = n * chunk / (time.perf_counter() - started)
    llm.close()
    client = engine_pool().engine(model, role="chat", n_ctx=chunk, n_threads=threads)
    with client.in_use():
        client.load()
        started = time.perf_counter()
        for k in range(n):
            _score(client, ids[k * chunk:(k + 1) * chunk], chunk, work / f"{k}.npy")
        corral = n * chunk / (time.perf_counter() - started)
    close_all()
    print(f"perplexity on {model.name}, {n} chunks of {chunk}, {threads} threads: raw "
          f"{raw:.0f} tok/s, Corral {corral:.0f} tok/s, ratio {corral / raw:.2f}x "
          "(target >= 0.9x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("src", nargs="?", type=Path)
    parser.add_argument("--type", default="Q4_K_M")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["CORRAL_HOME"] = str(work / "home")
        src = args.src
        if src is None:
            from core.workshop.gguf_rewrite import write_float_copy
            from tools.real_models import smollm2_path

            src = work / "smollm2-f16.gguf"
            write_float_copy(smollm2_path(), src)
        bench_quantize(src, args.type.upper(), args.threads, work)
        text = "\n\n".join(p.read_text(encoding="utf-8")
                           for p in sorted((ROOT / "resources" / "samples").iterdir()))
        bench_perplexity(src, text[:12000], args.chunk, args.threads, work)


if __name__ == "__main__":
    main()
