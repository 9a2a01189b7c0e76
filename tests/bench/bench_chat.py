"""Chat benchmarks (a script; prints ratios, asserts nothing):

1. tokens/s of Corral's chat path (ChatSession -> engine child) and of `corral chat` vs raw
   llama-cpp-python in one process, same model, same prompt ids, greedy (target >= 0.9x);
2. the GUI event loop's longest stall while the Chat page streams 5,000 tokens (target < 50 ms).

Run: QT_QPA_PLATFORM=offscreen python tests/bench/bench_chat.py [MODEL.gguf] [--tokens N]
Without a model, the tiny random GGUF of the test fixtures is used (it is very fast, so the
pipe between processes weighs more than it would with a real model).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CORRAL_HOME", tempfile.mkdtemp(prefix="corral-bench-"))


def raw_tokens_per_s(model: str, ids: list[int], n: int) -> float:
    from llama_cpp import Llama

    llm = Llama(model_path=model, n_ctx=max(2048, n + len(ids) + 8), n_threads=1, verbose=False)
    list(llm.create_completion(ids, max_tokens=8, temperature=0.0, stream=True))  # warm up
    start = time.perf_counter()
    count = 0
    first = None
    for _chunk in llm.create_completion(ids, max_tokens=n, temperature=0.0, stream=True):
        count += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    return (count - 1) / (end - (first or start))


def corral_tokens_per_s(model: str, n: int) -> tuple[float, list[int]]:
    from core.chat.llama_backend import LlamaCppBackend
    from core.chat.params import GenerationParams
    from core.chat.session import ChatSession
    from core.chat.store import HistoryStore

    backend = LlamaCppBackend(model, n_ctx=max(2048, n + 64), n_threads=1)
    session = ChatSession(backend, store=HistoryStore(":memory:"),
                          params=GenerationParams(max_tokens=8, temperature=0.0))
    list(session.send("hello"))  # warm up
    session = ChatSession(backend, store=HistoryStore(":memory:"),
                          params=GenerationParams(max_tokens=n, temperature=0.0))
    events = list(session.send("hello"))
    final = events[-1].message
    ids = events[0].prompt.token_ids
    return float(final.tokens_per_s or 0.0), ids


def cli_tokens_per_s(model: str, n: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from core.cli import main; sys.exit(main())", "chat",
         model, "--no-save", "--json", "--temperature", "0", "--max-tokens", str(n),
         "--ctx", str(max(2048, n + 64)), "hello"],
        capture_output=True, text=True, cwd=ROOT, check=True,
        env={**os.environ, "CORRAL_ENGINE_THREADS": "1"})
    import json

    return float(json.loads(out.stdout)["tokens_per_s"] or 0.0)


def gui_stall(n_tokens: int) -> tuple[int, int, int, float]:
    """Longest gap between 1 ms timer ticks while the page streams ``n_tokens`` as fast as a
    backend can produce them (a synthetic backend: the worst case for the GUI)."""
    from PySide6.QtCore import QElapsedTimer, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from core.chat.backends import BackendInfo, PreparedPrompt, StreamEvent
    from core.prompts.formats import render
    from desktop.context import AppContext
    from desktop.pages.chat.page import ChatPage

    class FastBackend:
        def info(self) -> BackendInfo:
            return BackendInfo("gguf", "synthetic", 1_000_000, "llama2", "test", True)

        def prepare(self, messages, fmt, tags):  # type: ignore[no-untyped-def]
            r = render(messages, fmt, tags=tags)
            return PreparedPrompt(r, token_ids=[1], token_count=10, exact_text=r.text)

        def count(self, messages, fmt, tags):  # type: ignore[no-untyped-def]
            return 10

        def stream(self, prompt, params):  # type: ignore[no-untyped-def]
            words = ["alpha ", "beta ", "gamma\n", "`code` ", "**bold** ", "delta "]
            for i in range(n_tokens):
                time.sleep(0.0003)  # ~3,000 tokens/s: faster than any local model here
                yield StreamEvent(text=words[i % len(words)], completion_tokens=i + 1)
            yield StreamEvent(done=True, finish_reason="length", completion_tokens=n_tokens)

        def cancel(self) -> None:
            pass

    app = QApplication.instance() or QApplication([])
    ctx = AppContext()
    page = ChatPage(ctx)
    page.resize(1200, 800)
    page.show()
    page.backend, page.backend_ref = FastBackend(), "synthetic"
    page.backend_info = page.backend.info()
    page.params_form.max_tokens.setValue(n_tokens)
    clock = QElapsedTimer()
    clock.start()
    gaps: list[int] = []
    last = [clock.elapsed()]

    def tick() -> None:
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(1)
    timer.timeout.connect(tick)
    page.input.setPlainText("stream please")
    started = time.perf_counter()
    timer.start()
    page.send()
    from PySide6.QtCore import QEventLoop

    loop = QEventLoop()
    turn = page.turn  # the turn's job: its ``done`` fires after the page has shown the answer
    assert turn is not None
    turn.signals.done.connect(loop.quit, type=Qt.ConnectionType.QueuedConnection)
    if not turn.is_done:
        loop.exec()
    app.processEvents()
    elapsed = time.perf_counter() - started
    timer.stop()
    ctx.jobs.wait_all()
    # the last gap holds the one re-render of the finished answer (Markdown), by design
    streaming = max(gaps[:-3] or [0])
    return streaming, max(gaps or [0]), len(gaps), elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--gui-tokens", type=int, default=5000)
    args = ap.parse_args()
    model = args.model
    if model is None:
        from tools.tiny_gguf import make_tiny_gguf

        model = str(make_tiny_gguf(Path(tempfile.mkdtemp()) / "tiny.gguf", n_ctx=4096))
    corral, ids = corral_tokens_per_s(model, args.tokens)
    raw = raw_tokens_per_s(model, ids, args.tokens)
    cli = cli_tokens_per_s(model, args.tokens)
    print(f"raw llama-cpp-python : {raw:9.1f} tokens/s")
    print(f"Corral engine child  : {corral:9.1f} tokens/s  ratio {corral / raw:.2f}x (target >= 0.9x)")
    print(f"corral chat (CLI)    : {cli:9.1f} tokens/s  ratio {cli / raw:.2f}x")
    stall, overall, ticks, elapsed = gui_stall(args.gui_tokens)
    print(f"GUI: {args.gui_tokens} tokens streamed in {elapsed:.2f} s ({ticks} timer ticks), "
          f"longest event-loop stall while streaming {stall} ms (target < 50 ms), "
          f"including the final Markdown render {overall} ms")


if __name__ == "__main__":
    main()
