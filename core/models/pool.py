"""The process-wide pool of llama.cpp engines: every chat model, the guard and the vocabularies
that count tokens get their engine child from here, so memory has one owner.

Roles: ``chat`` (at most ``max_chat`` loaded at once, the setting ``engine.max_models``),
``guard`` (its own slot) and ``vocab`` (vocabulary only, no weights: cheap, at most
``MAX_VOCAB``). One client per (file, role): a backend keeps its client, and the client asks
the pool for room each time it (re)loads. Making room unloads the least recently used idle
engine of that role; a busy one (a request in flight) is unloaded when its request ends.
Engines idle for ``keep_alive_s`` are unloaded by a daemon sweeper. The pool's lock is never
held while a model loads or generates, so two models stream at the same time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from core.errors import EngineBusy
from core.models.engine import EngineClient

if TYPE_CHECKING:
    from core.config import Settings

Role = Literal["chat", "guard", "vocab"]
MAX_GUARD = 1
MAX_VOCAB = 4


@dataclass(frozen=True)
class LoadedModel:
    """One engine whose child process is running now (the Models page lists these)."""

    path: str
    role: str
    n_ctx: int
    busy: bool  #: generating, checking or being measured: never unloaded
    idle_s: float  #: seconds since its last request ended (0 while busy)
    pid: int | None
    adapter: str | None = None  #: a LoRA adapter applied over ``path`` (another model)


class EnginePool:
    def __init__(self, *, max_chat: int = 1, keep_alive_s: float = 300.0) -> None:
        self.max_chat = max(1, int(max_chat))
        self.keep_alive_s = float(keep_alive_s)
        self._lock = threading.Lock()
        #: (resolved path, role, adapter or ''): with another adapter it is another model
        self._engines: dict[tuple[str, str, str], EngineClient] = {}
        self._wake = threading.Event()
        self._sweeper: threading.Thread | None = None

    def configure(self, *, max_chat: int, keep_alive_s: float) -> None:
        """Apply the settings (``engine.max_models``, ``engine.keep_alive_s``; a keep-alive
        of 0 keeps idle models until the limit needs their room). A lower limit unloads the
        surplus idle engines in the background."""
        with self._lock:
            self.max_chat = max(1, int(max_chat))
            self.keep_alive_s = float(keep_alive_s)
        self._wake.set()

    def engine(self, path: str | Path, *, role: Role = "chat", n_ctx: int = 2048,
               n_threads: int | None = None, n_gpu_layers: int = 0,
               lora_path: str | None = None) -> EngineClient:
        """The engine for ``path`` in ``role``, with this context length (it reloads with it on
        its next request if it was loaded with another one). Loading happens on the first
        request, not here."""
        vocab = role == "vocab"
        key = (str(Path(path).resolve()), role, "" if vocab else lora_path or "")
        options: dict[str, Any] = {"n_ctx": 512 if vocab else n_ctx,
                                   "n_threads": 1 if vocab else n_threads, "vocab_only": vocab,
                                   "lora_path": None if vocab else lora_path,
                                   "n_gpu_layers": 0 if vocab else n_gpu_layers}
        with self._lock:
            client = self._engines.get(key)
            if client is None:
                def make_room(newcomer: EngineClient, role: str = role) -> None:
                    self._make_room(newcomer, role)

                client = self._engines[key] = EngineClient(path, **options, on_load=make_room)
            else:
                client.configure(**options)
            self._start_sweeper()
        return client

    def loaded(self) -> list[LoadedModel]:
        """The engines whose child is running now, most recently used first."""
        now = time.monotonic()
        with self._lock:
            items = list(self._engines.items())
        out = []
        for (path, role, adapter), c in sorted(items, key=lambda kv: -kv[1].last_used):
            pid = c.pid
            if pid is None:
                continue
            n_ctx = int((c.info or {}).get("n_ctx") or c.options["n_ctx"])
            busy = c.busy
            out.append(LoadedModel(path, role, n_ctx, busy, 0.0 if busy else now - c.last_used,
                                   pid, adapter or None))
        return out

    def unload(self, path: str | Path, role: Role = "chat") -> None:
        """Unload the model now (with any adapter); EngineBusy if it is in the middle of a
        request."""
        resolved = str(Path(path).resolve())
        with self._lock:
            clients = [c for (p, r, _a), c in self._engines.items() if p == resolved and r == role]
        for client in clients:
            if client.alive and (client.busy or not client.unload_if_idle()):
                raise EngineBusy(f"{Path(path).name} is in use right now and cannot be unloaded")

    def close_all(self) -> None:
        """Stop every engine child, cancelling what runs (tests and the app's exit)."""
        with self._lock:
            clients = list(self._engines.values())
            sweeper, self._sweeper = self._sweeper, None
        self._wake.set()  # the sweeper ends; the next engine() starts another
        for client in clients:
            client.close()
        if sweeper is not None:
            sweeper.join(timeout=5)

    def sweep(self) -> None:
        """Unload idle engines past their keep-alive, and idle ones beyond a lowered limit."""
        now = time.monotonic()
        with self._lock:
            keep = self.keep_alive_s
            items = list(self._engines.items())
        for _key, client in items:
            if keep > 0 and client.alive and not client.busy and now - client.last_used >= keep:
                client.unload_if_idle()
        for role in ("chat", "guard", "vocab"):
            with self._lock:
                victims = self._surplus(None, role)
            for victim in victims:
                victim.unload_if_idle()

    # --- inside ------------------------------------------------------------------------

    def _limit(self, role: str) -> int:
        return {"chat": self.max_chat, "guard": MAX_GUARD}.get(role, MAX_VOCAB)

    def _surplus(self, newcomer: EngineClient | None, role: str) -> list[EngineClient]:
        """Engines of ``role`` to unload so that ``newcomer`` (if any) fits: idle ones first,
        least recently used first. Called with the lock held."""
        others = [c for (_p, r, _a), c in self._engines.items()
                  if r == role and c is not newcomer and c.holds_memory]
        excess = len(others) + (newcomer is not None) - self._limit(role)
        if excess <= 0:
            return []
        return sorted(others, key=lambda c: (c.busy, c.last_used))[:excess]

    def _make_room(self, client: EngineClient, role: str) -> None:
        """Admission, run by ``client`` before it loads: unload what exceeds the limit now,
        or (busy) as soon as its request ends. The newcomer loads either way."""
        with self._lock:
            victims = self._surplus(client, role)
        for victim in victims:  # outside the lock: stopping a child takes a moment
            if not victim.unload_if_idle():
                victim.unload_when_idle()

    def _start_sweeper(self) -> None:
        """Called with the lock held."""
        if self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep_forever, name="engine-pool",
                                             daemon=True)
            self._sweeper.start()

    def _sweep_forever(self) -> None:
        me = threading.current_thread()
        while self._sweeper is me:
            keep = self.keep_alive_s
            self._wake.wait(min(5.0, max(0.05, keep / 4)) if keep > 0 else 5.0)
            self._wake.clear()
            if self._sweeper is me:
                self.sweep()


_pool = EnginePool()


def engine_pool() -> EnginePool:
    """The one pool of this process."""
    return _pool


def use_settings(settings: Settings) -> None:
    """Apply ``settings.engine.max_models`` and ``keep_alive_s`` to the process's pool."""
    _pool.configure(max_chat=settings.engine.max_models,
                    keep_alive_s=settings.engine.keep_alive_s)


def loaded_paths() -> set[str]:
    """Resolved paths of the models whose engine child is running now."""
    return {m.path for m in _pool.loaded()}


def close_all() -> None:
    """Stop every engine child (tests and the app's exit)."""
    _pool.close_all()
