"""Fixtures the guard fault and Stop tests share: a tiny chat model, a folder of tiny guard
models, and closing their engines when a module is done (``usefixtures("close_engines")``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.chat.llama_backend import LlamaCppBackend


@pytest.fixture(scope="module")
def chat_backend(tiny_gguf: Path) -> Iterator[LlamaCppBackend]:
    yield LlamaCppBackend(tiny_gguf, n_ctx=1024, n_threads=1)


@pytest.fixture(scope="module")
def guards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guards")


@pytest.fixture(scope="module")
def close_engines() -> Iterator[None]:
    yield
    from core.models.pool import close_all

    close_all()
