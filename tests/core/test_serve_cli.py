"""`corral serve` as its own process: it announces its address, asks for its token, logs each
request as JSON with --json-logs, stops on Ctrl-C; it refuses an address other than loopback
without a token, and says clearly when another Corral process owns the knowledge bases."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from core.cli import main
from core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from core.cli import main; sys.exit(main(sys.argv[1:]))"


@contextmanager
def corral_serve(*args: str, env: dict[str, str] | None = None
                 ) -> Iterator[tuple[subprocess.Popen[str], str, list[str]]]:
    """The process, its URL, and the stderr lines read until it announced the URL."""
    proc = subprocess.Popen([sys.executable, "-c", CLI, "serve", "--port", "0", *args],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        url = ""
        while not url and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"http://127\.0\.0\.1:\d+", line)
            url = found.group(0) if found else ""
        assert url, "".join(lines)
        yield proc, url, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_corral_serve_answers_with_its_token_and_stops_on_ctrl_c() -> None:
    with corral_serve("--json-logs", env={"CORRAL_SERVE_TOKEN": "tok-123"}) as (proc, url,
                                                                               lines):
        announced = json.loads(lines[-1])
        assert announced["url"] == url and "token required" in announced["message"]
        assert httpx.get(f"{url}/v1/models").status_code == 401
        ok = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer tok-123"})
        assert ok.status_code == 200 and ok.json()["object"] == "list"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert proc.stderr is not None
        logged = [json.loads(x) for x in proc.stderr.read().splitlines() if x.startswith("{")]
    requests = [(r["path"], r["status"]) for r in logged if "status" in r]
    assert requests == [("/v1/models", 401), ("/v1/models", 200)]


def test_another_address_without_a_token_is_refused(capsys, monkeypatch) -> None:
    monkeypatch.delenv("CORRAL_SERVE_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "requires a token" in err and "--token" in err


def test_it_says_when_the_window_owns_the_knowledge_bases() -> None:
    from core.rag.store import close_stores, open_store

    open_store(Settings())  # this process plays the window: it owns the embedded store
    try:
        with corral_serve() as (proc, url, lines):
            said = "".join(lines)
            assert "open in another Corral process" in said
            assert "Serve the local API" in said
            resp = httpx.post(f"{url}/v1/vector_stores/Handbook/search", json={"query": "x"})
            assert resp.status_code == 503 and resp.json()["error"]["code"] == "store_locked"
    finally:
        close_stores()
