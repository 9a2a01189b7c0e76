"""The process-wide pool of llama.cpp engines: every chat model, the guard and the vocabularies
that count tokens get their engine child from here, so memory has one owner.

Roles: ``chat`` (limited to ``max_chat`` loaded at once), ``guard`` (its own slot) and
``vocab`` (vocabulary only, no weights: cheap, for token counts and the Tokens page).

SKELETON: the API is final; the limits, keep-alive and busy tracking are being built.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.models.engine import EngineClient

Role = Literal["chat", "guard", "vocab"]


@dataclass(frozen=True)
class LoadedModel:
    """One engine whose child process is running now (the Models page lists these)."""

    path: str
    role: str
    n_ctx: int
    busy: bool  #: generating, checking or being measured: never unloaded
    idle_s: float  #: seconds since its last request ended (0 while busy)
    pid: int | None


class EnginePool:
    def __init__(self, *, max_chat: int = 1, keep_alive_s: float = 300.0) -> None:
        self.max_chat = max_chat
        self.keep_alive_s = keep_alive_s
        self._lock = threading.Lock()
        self._engines: dict[tuple[str, str], EngineClient] = {}

    def configure(self, *, max_chat: int, keep_alive_s: float) -> None:
        """Apply the settings (``engine.max_models``, ``engine.keep_alive_s``)."""
        with self._lock:
            self.max_chat = max(1, int(max_chat))
            self.keep_alive_s = float(keep_alive_s)

    def engine(self, path: str | Path, *, role: Role = "chat", n_ctx: int = 2048,
               n_threads: int | None = None, n_gpu_layers: int = 0,
               lora_path: str | None = None) -> EngineClient:
        """The engine for ``path`` in ``role``, with this context length (reopened if it was
        loaded with another one). Loading happens on its first request, not here."""
        key = (str(Path(path).resolve()), role)
        options: dict[str, Any] = {"n_ctx": 512 if role == "vocab" else n_ctx,
                                   "n_threads": 1 if role == "vocab" else n_threads,
                                   "vocab_only": role == "vocab", "lora_path": lora_path,
                                   "n_gpu_layers": 0 if role == "vocab" else n_gpu_layers}
        with self._lock:
            client = self._engines.get(key)
            if client is not None and client.options_differ(options):
                client.close()
                client = None
            if client is None:
                client = self._engines[key] = EngineClient(path, **options)
            return client

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            items = list(self._engines.items())
        return [LoadedModel(path, role, int(c.options["n_ctx"]), False, 0.0, c.pid)
                for (path, role), c in items if c.alive]

    def unload(self, path: str | Path, role: Role = "chat") -> None:
        with self._lock:
            client = self._engines.pop((str(Path(path).resolve()), role), None)
        if client is not None:
            client.close()

    def close_all(self) -> None:
        with self._lock:
            clients = list(self._engines.values())
            self._engines.clear()
        for client in clients:
            client.close()


_pool = EnginePool()


def engine_pool() -> EnginePool:
    """The one pool of this process."""
    return _pool


def loaded_paths() -> set[str]:
    """Resolved paths of the models whose engine child is running now."""
    return {m.path for m in _pool.loaded()}


def close_all() -> None:
    """Stop every engine child (tests and the app's exit)."""
    _pool.close_all()
