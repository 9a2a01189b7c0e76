"""One running llama.cpp engine child, seen from Corral's side: its pipes, a queue of its reply
lines (so a read can time out), the tail of its stderr, and how it ended."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any


class EngineProcess:
    """Starts ``python -m core.models.engine_child``; lines are JSON objects both ways."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.models.engine_child"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            start_new_session=True,  # a Ctrl-C in a terminal must not kill it mid-reply
        )
        self.replies: queue.Queue[bytes | None] = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self._write_lock = threading.Lock()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        threading.Thread(target=self._pump, daemon=True).start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc.poll() is None else None

    def _pump(self) -> None:
        """Move reply lines into the queue; None marks the end of the pipe."""
        if self.proc.stdout is not None:
            for line in self.proc.stdout:
                self.replies.put(line)
        self.replies.put(None)

    def _drain_stderr(self) -> None:
        if self.proc.stderr is not None:
            for line in self.proc.stderr:
                self.stderr_tail.append(line.decode("utf-8", "replace").rstrip())

    def next_line(self, timeout: float) -> dict[str, Any] | None:
        """The next line as an object, None when the child has gone; queue.Empty if nothing
        came within ``timeout`` seconds."""
        line = self.replies.get(timeout=timeout)
        if line is None:
            return None
        reply: dict[str, Any] = json.loads(line)
        return reply

    def write(self, msg: dict[str, Any]) -> bool:
        """Write one line (from any thread); False when the child is not there to read it."""
        stdin = self.proc.stdin
        if stdin is None:
            return False
        try:
            with self._write_lock:
                stdin.write(json.dumps(msg).encode() + b"\n")
                stdin.flush()
        except (OSError, ValueError):  # a broken pipe, or stdin already closed
            return False
        return True

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()

    def stop(self) -> None:
        """End it politely (stdin closed: it exits), or kill it if it lingers."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()

    def exit_reason(self) -> str:
        """How it ended ('killed by SIGKILL', 'exited with code 1') and its last words."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if code < 0:
            try:
                reason = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                reason = f"killed by signal {-code}"
        else:
            reason = f"exited with code {code}"
        last = next((s for s in reversed(self.stderr_tail) if s.strip()), "")
        return reason + (f" ({last[:200]})" if last else "")


def stop_later(process: EngineProcess, still_needed: Any, after_s: float) -> None:
    """Kill ``process`` in ``after_s`` seconds if ``still_needed()`` then says so."""

    def check() -> None:
        if still_needed():
            process.kill()

    timer = threading.Timer(after_s, check)
    timer.daemon = True
    timer.start()
