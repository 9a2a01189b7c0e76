"""Client of the llama.cpp engine child process (DESIGN.md rule 4).

Untrusted model files never load in Corral's own process: ``EngineClient`` runs
``core.models.engine_child`` and talks JSON lines over pipes. A child that dies gives
``EngineCrashed`` (exit reason), one that stops answering (it sends heartbeats while it works)
is killed and gives ``EngineHung``; the next request starts a fresh child. Each request has an
id that a cancel names, so a Stop never hits the next request; the child aborts llama.cpp
mid-decode or mid-load, and one that does not answer within ``CANCEL_GRACE_S`` is killed.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import Cancelled, CorralError, EngineCrashed, EngineHung, ModelFileDamaged
from core.models.engine_process import EngineProcess, stop_later

#: Seconds without a line (a working child sends a heartbeat every second) before it is killed.
READ_TIMEOUT_S = 20.0
#: Seconds a child may take to answer a cancel before it is killed.
CANCEL_GRACE_S = 0.3
CLOSE_WAIT_S = 3.0  #: seconds ``close`` waits for a running request before it kills the child


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
    prompt_evaluated: int | None = None  #: prompt tokens read (fewer: Stop mid-prompt)
    prompt_read: int | None = None  #: prompt tokens this request decoded (the rest was cached)


class CancelToken:
    """Stops the one request it is passed to, even before that request reaches the child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._hook: Callable[[], None] | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            hook = self._hook
        if hook is not None:
            hook()

    def _bind(self, hook: Callable[[], None] | None) -> bool:  # True: already cancelled
        with self._lock:
            self._hook = hook
            return self._cancelled


def default_threads() -> int:
    env = os.environ.get("CORRAL_ENGINE_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, (os.cpu_count() or 2)))


class EngineClient:
    """One llama.cpp model in one child process. Thread-safe: requests are serialised.

    ``on_load`` (the pool's admission) runs before the model is (re)loaded into memory.
    """

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
        on_load: Callable[[EngineClient], None] | None = None,
    ) -> None:
        self.model_path = str(model_path)
        self.options: dict[str, Any] = {
            "n_ctx": n_ctx, "n_threads": n_threads or default_threads(),
            "embedding": embedding, "vocab_only": vocab_only,
            "n_gpu_layers": n_gpu_layers, "lora_path": lora_path,
        }
        self.info: dict[str, Any] | None = None
        self.last_used = time.monotonic()
        self._on_load = on_load
        self._loaded_options: dict[str, Any] | None = None
        self._child: EngineProcess | None = None
        self._lock = threading.RLock()  # held for a whole request (a whole stream)
        self._state = threading.Lock()  # guards _busy and _unload_pending
        self._busy = 0
        self._loading = False
        self._unload_pending = False
        self._rids = itertools.count(1)
        self._inflight = 0  # id of the request the child is working on (0: none)
        self._cancelled_rid = 0  # ... and of the last one cancelled or killed on purpose
        self.heartbeats = 0  #: "still working" lines the child sent during long requests

    def configure(self, **options: Any) -> None:
        """New load options (n_ctx ...); the model reloads with them on its next request.
        A missing thread count keeps the current one."""
        wanted = dict(self.options)
        for key, value in options.items():
            if key != "n_threads" or value:
                wanted[key] = value
        self.options = wanted

    # --- state the pool reads --------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def alive(self) -> bool:
        return self.pid is not None

    @property
    def busy(self) -> bool:
        """A request is in flight or waiting (generating, checking, tokenizing, loading)."""
        return self._busy > 0

    @property
    def current_info(self) -> dict[str, Any] | None:
        """The load info if the model is loaded with the current options (no waiting)."""
        info = self.info
        return info if self.alive and self._loaded_options == self.options else None

    @property
    def holds_memory(self) -> bool:
        return self._loading or self.alive

    def unload_if_idle(self) -> bool:
        """Stop the child unless a request is in flight; True when nothing is left running."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._busy:
                return False
            self._unload_pending = False
            self._stop_child()
            return True
        finally:
            self._lock.release()

    def unload_when_idle(self) -> None:
        """Stop the child as soon as its running request ends."""
        self._unload_pending = True
        if not self._busy:
            self.unload_if_idle()

    # --- the child process ------------------------------------------------------------

    def _gone(self, partial: str = "") -> CorralError:
        """The error for a child that is no longer there: Cancelled if we killed it on
        purpose for the request in flight, else EngineCrashed with the exit reason."""
        child, self._child = self._child, None
        self.info = self._loaded_options = None
        reason = child.exit_reason() if child is not None else "the engine is not running"
        if self._inflight and self._cancelled_rid == self._inflight:
            return Cancelled("stopped", partial=partial)
        return EngineCrashed(reason, partial=partial)

    def _read(self, partial: str = "") -> dict[str, Any]:
        """The next reply (heartbeats skipped); a child silent for READ_TIMEOUT_S is killed."""
        while True:
            child = self._child
            if child is None:
                raise self._gone(partial)
            try:
                reply = child.next_line(READ_TIMEOUT_S)
            except queue.Empty:
                child.kill()
                self._gone(partial)
                raise EngineHung(READ_TIMEOUT_S, partial=partial) from None
            if reply is None:
                raise self._gone(partial)
            if "hb" not in reply:
                return reply
            self.heartbeats += 1

    def _send(self, msg: dict[str, Any]) -> None:
        child = self._child
        if child is None or not child.write(msg):
            raise self._gone()

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        self.info = self._loaded_options = None
        if child is not None:
            child.stop()  # the child exits when its stdin closes

    # --- requests --------------------------------------------------------------------

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Busy for the pool (never unloaded) for the whole block, e.g. a measurement made
        of many requests; every request is in use on its own too."""
        with self._state:
            self._busy += 1
        self.last_used = time.monotonic()
        try:
            yield
        finally:
            self.last_used = time.monotonic()
            with self._state:
                self._busy -= 1
            if self._unload_pending and not self._busy:
                self.unload_if_idle()

    @contextlib.contextmanager
    def _request(self, token: CancelToken | None) -> Iterator[None]:
        """Hold the engine for one request, interruptible while it waits for another."""
        with self.in_use():
            while not self._lock.acquire(timeout=0.05):
                if token is not None and token.cancelled:
                    raise Cancelled("stopped")
            try:
                yield
            finally:
                self._lock.release()

    def _begin(self, msg: dict[str, Any], token: CancelToken | None) -> int:
        """Send one request to the child; its id is what a cancel names."""
        rid = next(self._rids)
        self._inflight = rid
        if token is not None and token._bind(lambda: self._cancel(rid)):
            self._end(token)
            raise Cancelled("stopped")
        self._send({**msg, "rid": rid})
        return rid

    def _end(self, token: CancelToken | None) -> None:
        self._inflight = 0
        if token is not None:
            token._bind(None)

    def _cancel(self, rid: int) -> None:
        child = self._child
        if not rid or rid != self._inflight or child is None:
            return  # nothing in flight, or that request is over: nothing to stop
        self._cancelled_rid = rid
        child.write({"op": "cancel", "rid": rid})
        stop_later(child, lambda: self._inflight == rid, CANCEL_GRACE_S)

    def _ensure(self, progress: Callable[[float], None] | None, token: CancelToken | None) -> None:
        """Start the child and load the model if either is missing (or the options changed)."""
        if self.current_info is not None:
            return
        self._loading = True
        try:
            if self._on_load is not None:
                self._on_load(self)  # the pool makes room before the memory is taken
            if not self.alive:
                from core.models import gguf_check

                child = EngineProcess()  # it imports llama.cpp while the file is checked
                try:
                    gguf_check.check_loadable(self.model_path)  # before the child may read it
                except BaseException:
                    child.kill()
                    raise
                self._child = child
                if not self._read().get("ready"):
                    raise EngineCrashed("the engine did not start")
            self.info = self._load(progress, token)
        finally:
            self._loading = False

    def _load(self, progress: Callable[[float], None] | None, token: CancelToken | None
              ) -> dict[str, Any]:
        options = dict(self.options)
        self.info = self._loaded_options = None
        self._begin({"op": "load", "path": self.model_path, **options}, token)
        try:
            reply = self._read()
            while "progress" in reply:
                if progress is not None:
                    progress(float(reply["progress"]))
                reply = self._read()
        except Cancelled:
            raise Cancelled("loading the model was stopped") from None
        except EngineHung:
            raise
        except EngineCrashed as exc:
            raise ModelFileDamaged(self.model_path, f"llama.cpp could not load it ({exc.reason})") from exc
        finally:
            self._end(token)
        if reply.get("cancelled"):
            raise Cancelled("loading the model was stopped")
        if not reply.get("ok"):
            raise ModelFileDamaged(self.model_path, f"llama.cpp could not load it: {reply.get('error')}")
        self._loaded_options = options
        return reply

    def _call(self, msg: dict[str, Any], token: CancelToken | None = None) -> dict[str, Any]:
        with self._request(token):
            self._ensure(None, token)
            self._begin(msg, token)
            try:
                reply = self._read()
            finally:
                self._end(token)
            if reply.get("cancelled"):
                raise Cancelled("stopped")
            if not reply.get("ok"):
                raise CorralError(f"engine error: {reply.get('error')}")
            return reply

    # --- API -------------------------------------------------------------------------

    def load(self, progress: Callable[[float], None] | None = None, *,
             cancel: CancelToken | None = None) -> dict[str, Any]:
        """Load the model (if needed); ``progress`` gets llama.cpp's load fraction."""
        with self._request(cancel):
            self._ensure(progress, cancel)
            assert self.info is not None
            return self.info

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        reply = self._call({"op": "tokenize", "text": text, "add_bos": add_bos, "special": special})
        return [int(i) for i in reply["ids"]]

    def detokenize(self, ids: Sequence[int], *, special: bool = False) -> bytes:
        reply = self._call({"op": "detokenize", "ids": list(ids), "special": special})
        return base64.b64decode(reply["b64"])

    def token_pieces(self, ids: Sequence[int]) -> list[bytes]:
        reply = self._call({"op": "pieces", "ids": list(ids)})
        return [base64.b64decode(p) for p in reply["b64"]]

    def token_types(self, ids: Sequence[int]) -> list[str]:
        reply = self._call({"op": "types", "ids": list(ids)})
        return [str(t) for t in reply["types"]]

    def special_tokens(self) -> list[bytes]:
        """The texts of every control and user-defined token (what a template may write and
        a message must not), scanned in the child in one request."""
        reply = self._call({"op": "specials"})
        return [base64.b64decode(p) for p in reply["b64"]]

    def next_token_probs(self, prompt_ids: Sequence[int], candidate_ids: Sequence[int], *,
                         cancel: CancelToken | None = None) -> dict[int, float]:
        reply = self._call({"op": "probs", "ids": list(prompt_ids),
                            "candidates": list(candidate_ids)}, cancel)
        return {int(k): float(v) for k, v in reply["probs"].items()}

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        reply = self._call({"op": "embed", "texts": list(texts)})
        return [[float(x) for x in v] for v in reply["vectors"]]

    def generate(
        self, prompt_ids: Sequence[int], *, max_tokens: int = 256, temperature: float = 0.8,
        top_p: float = 0.95, top_k: int = 40, repeat_penalty: float = 1.1,
        seed: int | None = None, stop: Sequence[str] = (), stop_ids: Sequence[int] = (),
        cancel: CancelToken | None = None,
    ) -> Iterator[GenerationEvent]:
        """Stream the completion of ``prompt_ids``; the engine is held until the stream ends.
        A cancel (``cancel`` or ``self.cancel()``) ends it with finish_reason 'cancelled'."""
        msg = {
            "op": "generate", "ids": list(prompt_ids), "max_tokens": max_tokens,
            "temperature": temperature, "top_p": top_p, "top_k": top_k,
            "repeat_penalty": repeat_penalty, "seed": seed, "stop": list(stop),
            "stop_ids": [int(i) for i in stop_ids],
        }
        try:
            with self._request(cancel):
                self._ensure(None, cancel)
                yield from self._stream(msg, cancel)
        except Cancelled:  # a Stop while waiting or loading: no answer, no error
            yield GenerationEvent(done=True, finish_reason="cancelled",
                                  prompt_tokens=len(prompt_ids), prompt_evaluated=0)

    def _stream(self, msg: dict[str, Any], token: CancelToken | None) -> Iterator[GenerationEvent]:
        self._begin(msg, token)
        partial: list[str] = []
        count = 0
        done = False
        stopped = {"done": True, "finish_reason": "cancelled", "prompt_tokens": len(msg["ids"])}
        try:
            while True:
                try:
                    reply = self._read("".join(partial))
                except Cancelled:  # killed after it ignored the cancel: what came stays
                    reply = {**stopped, "completion_tokens": count}
                if reply.get("ok") is False and reply.get("cancelled"):
                    reply = {**stopped, "completion_tokens": count}
                if "text" in reply:
                    partial.append(reply["text"])
                    count = int(reply["n"])
                    yield GenerationEvent(text=reply["text"], completion_tokens=count)
                elif reply.get("done"):
                    done = True
                    yield GenerationEvent(
                        done=True, finish_reason=reply.get("finish_reason"),
                        prompt_tokens=int(reply.get("prompt_tokens", 0)),
                        completion_tokens=int(reply.get("completion_tokens", 0)),
                        first_token_s=reply.get("first_token_s"), total_s=reply.get("total_s"),
                        prompt_evaluated=reply.get("prompt_evaluated"),
                        prompt_read=reply.get("prompt_read"))
                    return
                elif reply.get("ok") is False:
                    done = True
                    raise CorralError(f"engine error: {reply.get('error')}")
        finally:
            if not done and self._inflight:
                self._abandon()  # the consumer stopped early: stop the child, drain its replies
            self._end(token)

    def _abandon(self) -> None:
        self._cancel(self._inflight)
        with contextlib.suppress(CorralError):
            while self._child is not None and not {"done", "ok"} & self._read().keys():
                pass  # text still on its way: the request ends with 'done' (or an error)

    def cancel(self) -> None:
        """Stop the request in flight (from any thread): a stream ends with finish_reason
        'cancelled', a load raises Cancelled; a child that ignores it is killed."""
        self._cancel(self._inflight)

    def close(self) -> None:
        """Stop the child; a running request is cancelled first (and killed if it lingers)."""
        self.cancel()
        got = self._lock.acquire(timeout=CLOSE_WAIT_S)
        try:
            child = self._child
            if not got and child is not None:
                self._cancelled_rid = self._inflight
                child.kill()
            self._stop_child()
        finally:
            if got:
                self._lock.release()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
