"""Client of the llama.cpp engine child process (DESIGN.md rule 4).

Untrusted model files never load in Corral's own process: ``EngineClient`` starts
``core.models.engine_child`` with the same Python, loads the GGUF there and talks JSON lines
over pipes. If the child dies (a malformed file can abort() it, or someone kills it), the
caller gets ``EngineCrashed`` with the exit reason, and the next request starts a fresh child
and reloads the model.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from core.errors import CorralError, EngineCrashed, ModelFileDamaged


@dataclass
class GenerationEvent:
    """One piece of streamed text, or (``done``) the closing statistics."""

    text: str = ""
    done: bool = False
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float | None = None
    total_s: float | None = None


def default_threads() -> int:
    env = os.environ.get("CORRAL_ENGINE_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, (os.cpu_count() or 2)))


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "the engine stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with code {code}"


class EngineClient:
    """One llama.cpp model in one child process. Thread-safe: requests are serialised."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        embedding: bool = False,
        vocab_only: bool = False,
        n_gpu_layers: int = 0,
        lora_path: str | None = None,
    ) -> None:
        self.model_path = str(model_path)
        self.options: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_threads": n_threads or default_threads(),
            "embedding": embedding,
            "vocab_only": vocab_only,
            "n_gpu_layers": n_gpu_layers,
            "lora_path": lora_path,
        }
        self.info: dict[str, Any] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._stderr_tail: deque[str] = deque(maxlen=20)

    def options_differ(self, options: dict[str, Any]) -> bool:
        """Whether loading with ``options`` would give another engine than this one."""
        wanted = dict(self.options)
        for key, value in options.items():
            if key != "n_threads" or value:  # no thread count: any will do
                wanted[key] = value
        return wanted != self.options

    # --- process management ----------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    @property
    def alive(self) -> bool:
        return self.pid is not None

    def _start(self) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "core.models.engine_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C in a terminal must not kill it mid-reply
        )
        threading.Thread(target=self._drain_stderr, args=(self._proc.stderr,), daemon=True).start()
        hello = self._read()
        if not hello.get("ready"):
            raise EngineCrashed("the engine did not start")

    def _drain_stderr(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for line in stream:
            self._stderr_tail.append(line.decode("utf-8", "replace").rstrip())

    def _crashed(self, partial: str = "") -> EngineCrashed:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        self._proc = None
        last = next((s for s in reversed(self._stderr_tail) if s.strip()), "")
        reason = _exit_reason(code) + (f" ({last[:200]})" if last else "")
        return EngineCrashed(reason, partial=partial)

    def _read(self, partial: str = "") -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise self._crashed(partial)
        result: dict[str, Any] = json.loads(line)
        return result

    def _send(self, msg: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(msg).encode() + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._crashed() from None

    def _ensure(self, progress: Callable[[float], None] | None = None) -> None:
        """Start the child and load the model if either is missing."""
        if self._proc is not None and self._proc.poll() is None and self.info is not None:
            return
        if self._proc is None or self._proc.poll() is not None:
            from core.models import gguf_check

            gguf_check.check_loadable(self.model_path)  # before a child is even started
            self._proc = None
            self._start()
        self.info = self._load(progress)

    def _load(self, progress: Callable[[float], None] | None) -> dict[str, Any]:
        self._send({"op": "load", "path": self.model_path, **self.options})
        try:
            reply = self._read()
            while "progress" in reply:
                if progress is not None:
                    progress(float(reply["progress"]))
                reply = self._read()
        except EngineCrashed as exc:
            raise ModelFileDamaged(self.model_path, f"llama.cpp could not load it ({exc.reason})") from exc
        if not reply.get("ok"):
            raise ModelFileDamaged(self.model_path, f"llama.cpp could not load it: {reply.get('error')}")
        return reply

    def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._ensure()
            self._send(msg)
            reply = self._read()
            if not reply.get("ok"):
                raise CorralError(f"engine error: {reply.get('error')}")
            return reply

    # --- API -----------------------------------------------------------------------

    def load(self, progress: Callable[[float], None] | None = None) -> dict[str, Any]:
        """Load the model (if needed); ``progress`` gets llama.cpp's load fraction."""
        with self._lock:
            self._ensure(progress)
            assert self.info is not None
            return self.info

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        reply = self._request({"op": "tokenize", "text": text, "add_bos": add_bos, "special": special})
        return [int(i) for i in reply["ids"]]

    def detokenize(self, ids: Sequence[int], *, special: bool = False) -> bytes:
        reply = self._request({"op": "detokenize", "ids": list(ids), "special": special})
        return base64.b64decode(reply["b64"])

    def token_pieces(self, ids: Sequence[int]) -> list[bytes]:
        reply = self._request({"op": "pieces", "ids": list(ids)})
        return [base64.b64decode(p) for p in reply["b64"]]

    def token_types(self, ids: Sequence[int]) -> list[str]:
        reply = self._request({"op": "types", "ids": list(ids)})
        return [str(t) for t in reply["types"]]

    def next_token_probs(self, prompt_ids: Sequence[int], candidate_ids: Sequence[int]) -> dict[int, float]:
        reply = self._request({"op": "probs", "ids": list(prompt_ids), "candidates": list(candidate_ids)})
        return {int(k): float(v) for k, v in reply["probs"].items()}

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        reply = self._request({"op": "embed", "texts": list(texts)})
        return [[float(x) for x in v] for v in reply["vectors"]]

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_p: float = 0.95,
        top_k: int = 40,
        repeat_penalty: float = 1.1,
        seed: int | None = None,
        stop: Sequence[str] = (),
        stop_ids: Sequence[int] = (),
    ) -> Iterator[GenerationEvent]:
        """Stream the completion of ``prompt_ids``. The lock is held until the stream ends."""
        msg = {
            "op": "generate", "ids": list(prompt_ids), "max_tokens": max_tokens,
            "temperature": temperature, "top_p": top_p, "top_k": top_k,
            "repeat_penalty": repeat_penalty, "seed": seed, "stop": list(stop),
            "stop_ids": [int(i) for i in stop_ids],
        }
        with self._lock:
            self._ensure()
            self._send(msg)
            partial: list[str] = []
            finished = False
            try:
                while True:
                    reply = self._read("".join(partial))
                    if "text" in reply:
                        partial.append(reply["text"])
                        yield GenerationEvent(text=reply["text"], completion_tokens=int(reply["n"]))
                    elif reply.get("done"):
                        finished = True
                        yield GenerationEvent(
                            done=True,
                            finish_reason=reply.get("finish_reason"),
                            prompt_tokens=int(reply.get("prompt_tokens", 0)),
                            completion_tokens=int(reply.get("completion_tokens", 0)),
                            first_token_s=reply.get("first_token_s"),
                            total_s=reply.get("total_s"),
                        )
                        return
                    elif reply.get("ok") is False:
                        raise CorralError(f"engine error: {reply.get('error')}")
            except GeneratorExit:
                # The consumer stopped early: stop the child and drain its replies.
                if not finished:
                    self._abandon()
                raise

    def _abandon(self) -> None:
        if not self.alive:
            return
        try:
            self._send({"op": "cancel"})
            while not self._read().get("done"):
                pass
        except EngineCrashed:
            pass

    def cancel(self) -> None:
        """Stop a running generate (from any thread); it ends with finish_reason 'cancelled'."""
        proc = self._proc
        if proc is not None and proc.stdin is not None and proc.poll() is None:
            try:
                proc.stdin.write(b'{"op": "cancel"}\n')
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
            self.info = None
            if proc is None:
                return
            try:
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, OSError):
                proc.kill()
                proc.wait()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
