"""Turn a model reference (``ollama:NAME``, ``store:NAME``, a .gguf path, an imported name) into
a chat backend, using the models area's resolver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.chat.backends import ChatBackend
from core.chat.llama_backend import LlamaCppBackend
from core.chat.ollama_backend import OllamaBackend
from core.config import Settings
from core.errors import ModelNotFound
from core.models.pool import use_settings
from core.models.refs import parse_ref, resolve


def ollama_client(settings: Settings, host: str | None = None) -> Any:
    from core.models.ollama_client import OllamaClient

    return OllamaClient(host=host or settings.ollama.host or None,
                        connect_timeout=settings.ollama.connect_timeout,
                        read_timeout=settings.ollama.read_timeout)


def open_backend(ref: str, settings: Settings, *, n_ctx: int = 0) -> ChatBackend:
    """The backend for ``ref``; ModelNotFound with a clear sentence if it names nothing."""
    ref = ref.strip()
    if not ref:
        raise ModelNotFound("no model chosen", hint="Pick a model first.")
    resolved = resolve(parse_ref(ref), settings)
    if resolved.kind == "ollama":
        return OllamaBackend(ollama_client(settings, resolved.host), resolved.name,
                             store_dir=settings.ollama.store_dir,
                             default_ctx=n_ctx or settings.engine.n_ctx)
    if resolved.path is None or not Path(resolved.path).exists():
        raise ModelNotFound(f"the model file for {ref!r} is missing: {resolved.path}")
    use_settings(settings)  # engine.max_models and keep_alive_s, for every engine opened
    return LlamaCppBackend(resolved.path, n_ctx=n_ctx or settings.engine.n_ctx,
                           n_threads=settings.engine.n_threads or None,
                           n_gpu_layers=settings.engine.n_gpu_layers,
                           lora_path=str(resolved.adapter) if resolved.adapter else None,
                           display=str(getattr(resolved, "display", "") or ref))
