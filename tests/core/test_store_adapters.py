"""Ollama-store models made with an ADAPTER: llama.cpp runs them with the LoRA adapter applied,
or refuses them with an error that names the adapter. Never silently as the base model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.chat.open import open_backend
from core.chat.params import GenerationParams
from core.chat.session import ChatSession
from core.chat.store import HistoryStore
from core.config import Settings
from core.errors import CorralError, ModelFileDamaged
from core.models.catalog import collect
from core.models.ollama_store import OllamaStore
from core.models.refs import resolve
from tests.fixtures.ollama import add_store_model
from tools.tiny_gguf import make_tiny_lora


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter for the tiny model: with it, greedy decoding always says 'llama'."""
    return make_tiny_lora(tmp_path_factory.mktemp("lora") / "tiny-lora.gguf")


def settings_for(root: Path) -> Settings:
    settings = Settings()
    settings.ollama.store_dir = str(root)
    settings.ollama.host = "http://127.0.0.1:9"  # nobody: the store needs no server
    settings.engine.n_ctx = 512
    return settings


def answer(ref: str, settings: Settings) -> str:
    session = ChatSession(open_backend(ref, settings), store=HistoryStore(), fmt="llama2",
                          params=GenerationParams(max_tokens=6, temperature=0.0, seed=1))
    return list(session.send("hello model"))[-1].message.content


def test_a_model_with_an_adapter_runs_with_it_applied(tmp_path: Path, tiny_gguf: Path,
                                                      tiny_lora: Path) -> None:
    root = tmp_path / "models"
    add_store_model(root, "tiny", tiny_gguf)
    add_store_model(root, "tiny-tuned", tiny_gguf, adapter=tiny_lora)
    settings = settings_for(root)
    resolved = resolve("store:tiny-tuned", settings)
    assert resolved.adapter is not None and resolved.adapter.read_bytes() == tiny_lora.read_bytes()
    assert "LoRA adapter" in resolved.display
    assert resolve("store:tiny", settings).adapter is None
    base, tuned = answer("store:tiny", settings), answer("store:tiny-tuned", settings)
    assert tuned.split() == ["llama"] * 6 and base != tuned
    rows = {m.name: m for m in collect(settings).models}
    assert rows["tiny-tuned:latest"].adapter.startswith("sha256:")
    assert rows["tiny:latest"].adapter == ""


def test_a_missing_or_damaged_adapter_is_refused_by_name(tmp_path: Path, tiny_gguf: Path,
                                                         tiny_lora: Path) -> None:
    root = tmp_path / "models"
    add_store_model(root, "gone", tiny_gguf, adapter=tiny_lora)
    add_store_model(root, "not-lora", tiny_gguf, adapter=tiny_gguf)  # a model, not an adapter
    settings = settings_for(root)
    gone = OllamaStore(root).find("gone").adapter
    assert gone is not None and gone.path is not None
    gone.path.unlink()
    for ref, why in (("store:gone", "missing from the store"),
                     ("store:not-lora", "not a LoRA adapter")):
        with pytest.raises(ModelFileDamaged) as caught:
            open_backend(ref, settings)
        assert "LoRA adapter" in caught.value.sentence() and why in caught.value.sentence()
    rows = {m.name: m for m in collect(settings).models}
    assert "adapter layer" in (rows["gone:latest"].problem or "")


def test_an_adapter_that_does_not_fit_the_model_is_refused(tmp_path: Path,
                                                           tiny_gguf: Path) -> None:
    # llama.cpp would refuse it too, but this llama-cpp-python then crashes at the first token
    root = tmp_path / "models"
    bad = make_tiny_lora(tmp_path / "misfit.gguf", n_in=32)  # shapes for another model
    add_store_model(root, "misfit", tiny_gguf, adapter=bad)
    store = HistoryStore()
    with pytest.raises(CorralError) as caught:
        session = ChatSession(open_backend("store:misfit", settings_for(root)), store=store,
                              fmt="llama2", params=GenerationParams(max_tokens=4))
        list(session.send("hello model"))
    assert "LoRA adapter" in caught.value.sentence()
    assert "do not fit this model" in caught.value.sentence()
    assert all(not m.content for c in store.conversations() for m in store.messages(c.id)
               if m.role == "assistant")  # nothing was answered by the base model


def test_two_adapters_are_refused(tmp_path: Path, tiny_gguf: Path, tiny_lora: Path) -> None:
    import json

    root = tmp_path / "models"
    manifest = add_store_model(root, "twice", tiny_gguf, adapter=tiny_lora)
    doc = json.loads(manifest.read_text())
    doc["layers"] += [la for la in doc["layers"] if la["mediaType"].endswith(".adapter")]
    manifest.write_text(json.dumps(doc))
    with pytest.raises(ModelFileDamaged, match="2 LoRA adapters"):
        resolve("store:twice", settings_for(root))
    shutil.rmtree(root)


def test_a_crash_with_an_adapter_applied_names_the_adapter(tmp_path: Path, tiny_gguf: Path,
                                                           tiny_lora: Path) -> None:
    """This llama.cpp build crashes at the first token when it refused an adapter that passed
    the header checks; the user must learn which adapter, not just "engine crashed"."""
    import os
    import signal

    from core.errors import EngineCrashed

    root = tmp_path / "models"
    add_store_model(root, "tiny-tuned", tiny_gguf, adapter=tiny_lora)
    backend = open_backend("store:tiny-tuned", settings_for(root))
    session = ChatSession(backend, store=HistoryStore(), fmt="llama2",
                          params=GenerationParams(max_tokens=500, temperature=0.0))
    with pytest.raises(EngineCrashed) as crash:
        for ev in session.send("hello model"):
            if ev.kind == "delta":
                os.kill(backend.engine.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    blob = str(resolve("store:tiny-tuned", settings_for(root)).adapter)
    assert "LoRA adapter" in crash.value.sentence() and blob in crash.value.sentence()
