"""Benchmark: Corral's defensive GGUF header reader vs the `gguf` package's GGUFReader.

Run: python tests/bench/bench_models.py  (prints seconds per read and the ratio).
A 150k-token vocabulary with scores and merges, like a modern model's header.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def make_header(path: Path, n_tokens: int = 150_000) -> Path:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_token_list([f"tok{i}" for i in range(n_tokens)])
    w.add_token_scores([0.0] * n_tokens)
    w.add_token_merges([f"a{i} b{i}" for i in range(n_tokens)])
    w.add_tensor("x", np.zeros((32,), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def best_of(fn, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    import gguf

    from core.models.gguf_meta import read_gguf

    with tempfile.TemporaryDirectory() as tmp:
        path = make_header(Path(tmp) / "big-vocab.gguf")
        ours = best_of(lambda: read_gguf(path))
        theirs = best_of(lambda: gguf.GGUFReader(str(path)))
    print(f"corral read_gguf: {ours:.3f} s")
    print(f"gguf.GGUFReader:  {theirs:.3f} s")
    print(f"ratio (corral / gguf): {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
