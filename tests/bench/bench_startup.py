"""Benchmark: time from process start to the main window shown (offscreen), and `corral --help`.

Targets on the 2-core reference machine: window under 1.0 s, --help under 0.3 s. Each is
also compared with a bare `python -c pass` start in the same run, to show what Corral adds.

Run: python tests/bench/bench_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

SHOW_WINDOW = r"""
import time, sys
t0 = float(sys.argv[1])
from desktop.app import create_app, MainWindow
from desktop.context import AppContext
app = create_app()
w = MainWindow(AppContext())
w.show()
app.processEvents()
print(time.time() - t0)
heavy = [m for m in ("torch", "chromadb", "llama_cpp", "sentence_transformers") if m in sys.modules]
print("heavy modules loaded before the window:", heavy or "none", file=sys.stderr)
w.status.shutdown()
w.close()  # waits for the jobs the first page started
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CORRAL_HOME=tempfile.mkdtemp())
    py = sys.executable
    bare = [timed([py, "-c", "pass"], env) for _ in range(a.runs)]
    helps = [timed([py, "-m", "desktop.launcher", "--help"], env) for _ in range(a.runs)]
    windows = []
    for _ in range(a.runs):
        out = subprocess.run([py, "-c", SHOW_WINDOW, str(time.time())], check=True,
                             capture_output=True, text=True, env=env)
        windows.append(float(out.stdout.strip().splitlines()[-1]))
        note = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
    m_bare, m_help, m_win = (statistics.median(x) for x in (bare, helps, windows))
    print(f"python -c pass        median {m_bare:.3f} s")
    print(f"corral --help         median {m_help:.3f} s  (target < 0.3 s; {m_help / m_bare:.1f}x bare python)")
    print(f"main window shown     median {m_win:.3f} s  (target < 1.0 s; {m_win / m_bare:.1f}x bare python)")
    print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
