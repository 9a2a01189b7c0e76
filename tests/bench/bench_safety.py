"""Benchmark: one guard check through GuardService (llama.cpp engine child, exact token ids,
first-token probability, early stop) vs raw llama-cpp-python doing the same in one process;
and the code scan's throughput on a long Markdown answer.

Run: python tests/bench/bench_safety.py [ROUNDS]
Prints median seconds per check for both and the ratio (Corral / raw; lower is better).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("CORRAL_ENGINE_THREADS", "1")

CONV = [{"role": "user", "content": "How do I bake a chocolate cake?"},
        {"role": "assistant", "content": "Mix flour, sugar, cocoa and eggs, then bake."}]


def main(rounds: int = 5) -> None:
    import llama_cpp
    import numpy as np

    from core.config import Settings
    from core.models.pool import close_all
    from core.prompts.guard import render_guard
    from core.safety.code_scan import scan_markdown
    from core.safety.guard import GuardService
    from tools.tiny_gguf import SPM_SPACE, make_tiny_gguf

    tmp = Path(tempfile.mkdtemp())
    os.environ["CORRAL_HOME"] = str(tmp / "home")
    path = make_tiny_gguf(tmp / "guard.gguf", always=SPM_SPACE + "safe")
    settings = Settings()
    settings.engine.n_threads = 1
    service = GuardService(str(path), "llama-guard-2", settings=settings, audit=False)
    service.check_output(CONV)  # start the child, load the model
    ours = []
    for _ in range(rounds):
        t = time.perf_counter()
        verdict = service.check_output(CONV)
        ours.append(time.perf_counter() - t)
    assert verdict.verdict == "safe"
    close_all()

    llm = llama_cpp.Llama(str(path), n_ctx=4096, n_threads=1, n_threads_batch=1, verbose=False)
    text = render_guard(CONV, "llama-guard-2").text
    raw = []
    for _ in range(rounds + 1):
        t = time.perf_counter()
        ids = llm.tokenize(text.encode(), add_bos=True, special=False)
        llm.reset()
        llm.eval(ids)
        row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).max()
        out = llm.create_completion(ids, max_tokens=1, temperature=0.0)
        raw.append(time.perf_counter() - t)
    assert out["choices"][0]["text"].strip() == "safe"
    a, b = statistics.median(ours), statistics.median(raw[1:])
    print(f"guard check: Corral {a * 1000:.1f} ms, raw llama-cpp-python {b * 1000:.1f} ms, "
          f"ratio {a / b:.2f}x")

    answer = "Some text.\n\n```python\n" + "x = eval(input())\n" * 2000 + "```\n"
    t = time.perf_counter()
    findings = scan_markdown(answer)
    dt = time.perf_counter() - t
    print(f"code scan: {len(findings)} findings in 2000 lines, {dt * 1000:.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
