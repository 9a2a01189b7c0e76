"""Test settings shared by every test: data under a temp CORRAL_HOME, Qt offscreen, fixtures."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CORRAL_ENGINE_THREADS", "1")

pytest_plugins = [
    "tests.fixtures.gguf",
    "tests.fixtures.ollama",
    "tests.fixtures.chroma",
    "tests.fixtures.documents",
]


@pytest.fixture(autouse=True)
def corral_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own CORRAL_HOME; nothing touches the user's data."""
    home = tmp_path_factory.mktemp("corral-home")
    monkeypatch.setenv("CORRAL_HOME", str(home))
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.setenv("OLLAMA_MODELS", str(home / "no-ollama-store"))
    return home
