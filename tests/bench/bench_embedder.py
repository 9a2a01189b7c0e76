"""Benchmark: the fast embedder modes vs the standard (sentence-transformers) embedder.

Run: python tests/bench/bench_embedder.py [--rounds 3] [--chunks 300] [--no-export]
In one run: chunks/s of standard, fast and fastest on the same chunks of ~200 words, the
ratios to standard (targets: fast >= 2.0x, fastest >= 3.0x), start-up time of each in a
fresh process (import + load + first vector; exports cached) and the one-time export time.
Rounds are interleaved and a ratio is the median of per-round ratios, so a busy shared CPU
slows the modes alike.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
PARAGRAPHS = ROOT / "tests" / "core" / "data" / "fast_embedder_paragraphs.txt"
MODES = ("standard", "fast", "fastest")

_STARTUP = """
import time, sys
t = time.perf_counter()
from core.rag.embedder import make_embedder
emb = make_embedder("minilm", sys.argv[1])
emb.embed(["how long does the first vector take?"])
print(time.perf_counter() - t, emb.mode)
"""


def make_chunks(n: int = 300, words: int = 200, seed: int = 7) -> list[str]:
    """``n`` chunks of about ``words`` words: shuffled sentences of the test paragraphs."""
    import re

    text = PARAGRAPHS.read_text(encoding="utf-8")
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ")) if s.strip()]
    rng = random.Random(seed)
    chunks = []
    for _ in range(n):
        picked: list[str] = []
        while sum(len(s.split()) for s in picked) < words:
            picked.append(rng.choice(sentences))
        chunks.append(" ".join(picked))
    return chunks


def startup_seconds(mode: str, home: str) -> float:
    env = dict(os.environ, CORRAL_HOME=home, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", _STARTUP, mode], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    if out[1] != mode:
        raise SystemExit(f"{mode} mode fell back to {out[1]}: is OpenVINO installed?")
    return float(out[0])


def main(rounds: int = 3, n_chunks: int = 300, export: bool = True) -> dict[str, float]:
    home = tempfile.mkdtemp(prefix="corral-bench-")
    os.environ["CORRAL_HOME"] = home
    from core.rag.embedder import make_embedder
    from core.rag.fast_embedder import prepare_fast_embedder

    export_s = 0.0
    if export:
        t = time.perf_counter()
        prepare_fast_embedder("fastest", calibration=make_chunks(64, seed=99))
        export_s = time.perf_counter() - t
    chunks = make_chunks(n_chunks)
    embedders = {m: make_embedder("minilm", m) for m in MODES}
    for m, emb in embedders.items():
        assert emb.mode == m, f"{m} mode unavailable"
        emb.embed(chunks[:16])  # warm-up
    speed: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(rounds):
        for m in MODES if r % 2 == 0 else reversed(MODES):
            t = time.perf_counter()
            embedders[m].embed(chunks)
            speed[m].append(n_chunks / (time.perf_counter() - t))
    start: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(max(1, rounds - 1)):
        for m in MODES:
            start[m].append(startup_seconds(m, home))
    med = {m: statistics.median(v) for m, v in speed.items()}
    # the CPU is shared: a ratio within one round compares like with like
    ratio = {m: statistics.median(a / b for a, b in zip(speed[m], speed["standard"], strict=True))
             for m in MODES}
    up = {m: statistics.median(v) for m, v in start.items()}
    tok = embedders["standard"].count_tokens  # type: ignore[attr-defined]
    mean_tokens = statistics.mean(min(256, tok(c)) for c in chunks)
    print(f"{n_chunks} chunks of ~200 words (mean {mean_tokens:.0f} tokens), {rounds} rounds, "
          f"{os.cpu_count()} CPUs")
    for m in MODES:
        variant = getattr(embedders[m], "variant", "torch fp32")
        runs = " ".join(f"{v:.1f}" for v in speed[m])
        print(f"  {m:8s} {variant:10s} {med[m]:6.1f} chunks/s ({runs})  ratio "
              f"{ratio[m]:.2f}x  start-up {up[m]:.2f} s")
    once = f"{export_s:.1f} s" if export else "not measured (--no-export)"
    print(f"  targets: fast >= 2.0x, fastest >= 3.0x; one-time export (fast + fastest): {once}")
    return {f"{m}_ratio": ratio[m] for m in MODES}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunks", type=int, default=300)
    ap.add_argument("--no-export", action="store_true", help="skip timing the one-time export")
    a = ap.parse_args()
    main(a.rounds, a.chunks, export=not a.no_export)
