"""Benchmark: one guard check through GuardService (llama.cpp engine child, exact token ids,
the guard's whole answer read greedily to its end of turn, strictly parsed, p(unsafe) from the
first token) vs raw llama-cpp-python reading the same prompt and answer in one process
(without the probability);
and the code scan: a 200-line answer with 4 code blocks (the whole scan vs semgrep alone on
the same files with the same rules), and findings per 1,000 lines of the Python standard
library.

Run: python tests/bench/bench_safety.py [ROUNDS] [--scan-only]
Prints median seconds for both sides and the ratio (Corral / raw; lower is better).
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



def conversation(n: int) -> list[dict[str, str]]:
    """A new conversation each round (the guard's policy text before it stays the same, as
    in a real chat: Corral keeps that prefix cached, raw llama-cpp-python reads it anew)."""
    return [{"role": "user", "content": f"How do I bake a chocolate cake for {n} people?"},
            {"role": "assistant", "content": f"Mix flour, sugar, cocoa and {n} eggs, then bake."}]


def main(rounds: int = 5) -> None:
    import llama_cpp

    from core.config import Settings
    from core.models.pool import close_all
    from core.prompts.guard import render_guard
    from core.safety.guard import GuardService
    from tools.tiny_gguf import SPM_SPACE, make_tiny_gguf

    tmp = Path(tempfile.mkdtemp())
    os.environ["CORRAL_HOME"] = str(tmp / "home")
    path = make_tiny_gguf(tmp / "guard.gguf", always=SPM_SPACE + "safe", then=("</s>",))
    settings = Settings()
    settings.engine.n_threads = 1
    service = GuardService(str(path), "llama-guard-2", settings=settings, audit=False)
    service.check_output(conversation(0))  # start the child, load the model
    ours = []
    for n in range(1, rounds + 1):
        t = time.perf_counter()
        verdict = service.check_output(conversation(n))
        ours.append(time.perf_counter() - t)
    assert verdict.verdict == "safe"
    close_all()

    llm = llama_cpp.Llama(str(path), n_ctx=4096, n_threads=1, n_threads_batch=1, verbose=False)
    raw = []
    for n in range(rounds + 1):
        text = render_guard(conversation(n), "llama-guard-2").text
        t = time.perf_counter()
        ids = llm.tokenize(text.encode(), add_bos=True, special=False)
        llm.reset()  # one fresh read of the prompt, then the answer (no probability)
        out = llm.create_completion(ids, max_tokens=32, temperature=0.0)
        raw.append(time.perf_counter() - t)
    assert out["choices"][0]["text"].strip() == "safe", out
    a, b = statistics.median(ours), statistics.median(raw[1:])
    print(f"guard check: Corral {a * 1000:.1f} ms, raw llama-cpp-python {b * 1000:.1f} ms, "
          f"ratio {a / b:.2f}x")



def answer_200_lines() -> str:
    """A 200-line answer: prose and 4 fenced blocks (Python, JavaScript, Java, C)."""
    py = ["import os, subprocess", "", "def run(cmd, folder):"]
    py += [f"    out{i} = subprocess.run(['ls', folder], capture_output=True)" for i in range(36)]
    py += ["    os.system('ls ' + folder)", "    return out0"]
    js = ["const fs = require('fs');", "function load(name) {"]
    js += [f"  const part{i} = fs.readFileSync('data/' + name + '{i}.json');" for i in range(38)]
    js += ["  return eval(part0.toString());", "}"]
    java = ["import java.util.Random;", "class Pick {", "  int pick(int n) {"]
    java += [f"    int v{i} = n * {i} + 1;" for i in range(36)]
    java += ["    return new Random().nextInt(n);", "  }", "}"]
    c = ["#include <string.h>", "void copy(char *dst, const char *src, int n) {"]
    c += [f"    dst[{i}] = src[{i}];" for i in range(38)]
    c += ["    strcpy(dst, src);", "}"]
    parts = []
    for lang, code in (("python", py), ("javascript", js), ("java", java), ("c", c)):
        parts += ["Here is the next part, with a few words on what it does.", "",
                  f"```{lang}", *code, "```", ""]
    lines = parts + ["That is all."] * (200 - len(parts))
    return "\n".join(lines[:200])


def scan_bench(rounds: int = 9) -> None:
    import subprocess

    from core.safety.code_scan import code_blocks, scan_markdown
    from core.safety.code_scan.semgrep import (
        _target,
        find_semgrep_core,
        rules_text,
        semgrep_command,
    )

    answer = answer_200_lines()
    blocks = code_blocks(answer)
    assert len(answer.splitlines()) == 200 and len(blocks) == 4
    first = scan_markdown(answer)
    assert first.complete and len(first) >= 4, first.problems
    full, quick, raw = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        scan_markdown(answer)
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        scan_markdown(answer, semgrep=False)
        quick.append(time.perf_counter() - t)
    folder = Path(tempfile.mkdtemp())
    (folder / "rules.json").write_text(rules_text())
    names = []
    for block in blocks:
        name, text, _offset = _target(block)
        (folder / name).write_text(text)
        names.append(name)
    for _ in range(rounds):
        t = time.perf_counter()
        subprocess.run(semgrep_command("rules.json", names), executable=find_semgrep_core(),
                       cwd=folder, capture_output=True, check=True)
        raw.append(time.perf_counter() - t)
    a, b, q = statistics.median(full), statistics.median(raw), statistics.median(quick)
    print(f"code scan, 200-line answer with 4 blocks ({len(first)} findings): Corral "
          f"{a * 1000:.0f} ms, semgrep alone {b * 1000:.0f} ms, ratio {a / b:.2f}x; "
          f"quick scan (line rules only) {q * 1000:.1f} ms")


def stdlib_findings(folder: str = "/usr/lib/python3.11") -> None:
    """Findings per 1,000 lines of the Python standard library (false-positive pressure)."""
    from collections import Counter

    from core.safety.code_scan import CodeBlock, scan_blocks

    files = sorted(Path(folder).glob("*.py"))
    blocks = [CodeBlock(i, "python", "python", p.read_text(errors="replace"), 1)
              for i, p in enumerate(files)]
    lines = sum(b.code.count("\n") + 1 for b in blocks)
    t = time.perf_counter()
    scan = scan_blocks(blocks, budget_s=900)
    dt = time.perf_counter() - t
    assert scan.complete, scan.problems
    top = ", ".join(f"{rule} {n}" for rule, n in Counter(f.rule_id for f in scan).most_common(6))
    print(f"standard library: {len(files)} files, {lines} lines, {len(scan)} findings = "
          f"{1000 * len(scan) / lines:.2f} per 1,000 lines ({dt:.1f} s); most: {top}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count = int(args[0]) if args else 5
    if "--scan-only" not in sys.argv:
        main(count)
    scan_bench(max(count, 9))
    stdlib_findings()
