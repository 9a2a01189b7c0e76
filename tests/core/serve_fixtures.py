"""Helpers for the `corral serve` tests: a server on 127.0.0.1 and a free port, stopped by the
test, and the official ``openai`` client pointed at it (no retries: a test sees each answer)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai

from core.config import Settings
from core.serve.runner import ApiServer


@contextmanager
def serving(settings: Settings, **kw: Any) -> Iterator[str]:
    """The API's URL while the block runs."""
    server = ApiServer(settings, host="127.0.0.1", port=0, **kw)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def client(url: str, key: str = "unused", timeout: float = 120.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=timeout)


def ollama_settings(host: str) -> Settings:
    settings = Settings()
    settings.ollama.host = host
    settings.ollama.read_timeout = 10
    return settings
