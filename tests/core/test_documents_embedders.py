"""Embedders behind one interface: bundled MiniLM (offline), Ollama's /api/embed, a GGUF
through the engine child; vectors normalised; fast modes fall back with a clear notice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import CorralError, ModelNotFound
from core.rag import embedder as embedder_module
from core.rag.embedder import Embedder, make_embedder, minilm_path
from core.rag.indexing import index_paths
from core.rag.knowledge_base import create_kb
from core.rag.retriever import Retriever
from core.rag.store import Store
from tests.fixtures.documents import minilm_embedder, write_corpus

__all__ = ["minilm_embedder"]


def test_minilm_is_bundled_and_offline(minilm_embedder, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (minilm_path() / "model.safetensors").is_file()
    emb = minilm_embedder
    assert isinstance(emb, Embedder)
    assert (emb.name, emb.dimension, emb.max_tokens, emb.mode) == ("all-MiniLM-L6-v2", 384, 256, "standard")
    v = emb.embed(["The cat sat on the mat.", "A feline rested on a rug.", "Stock prices fell."])
    assert v.dtype == np.float32 and v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert emb.embed([]).shape == (0, 384)
    assert emb.count_tokens("hello world") == 4  # [CLS] hello world [SEP]


def test_unknown_embedders_are_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        make_embedder(str(tmp_path / "no-such-model"))
    with pytest.raises(CorralError):
        make_embedder("minilm", mode="turbo")


def test_fast_mode_failure_falls_back_with_a_notice(monkeypatch) -> None:
    def broken(*_a, **_k):
        raise CorralError("OpenVINO is not installed")

    from core.rag import fast_embedder

    monkeypatch.setattr(fast_embedder, "make_fast_embedder", broken)
    notices: list[str] = []
    emb = make_embedder("minilm", mode="fast", notice=notices.append)
    assert emb.mode == "standard"
    assert notices and "OpenVINO is not installed" in notices[0] and "standard" in notices[0]


def test_ollama_embedding_model_indexes_and_searches(ollama_server, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.host)
    ollama_server.add_model("nomic-embed-text", family="nomic-bert")
    emb = make_embedder("ollama:nomic-embed-text")
    v = emb.embed(["one", "two"])
    assert v.shape == (2, ollama_server.embed_dim)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert ollama_server.requests_to("/api/embed")

    write_corpus(tmp_path / "d", n_files=2, words=40)
    st = Store(mode="embedded", path=tmp_path / "chroma").open()
    try:
        embedder_module._shared.clear()
        kb = create_kb("ollama kb", embedder="ollama:nomic-embed-text", store=st)
        assert kb.embedder_name == "ollama:nomic-embed-text" and kb.dimension == ollama_server.embed_dim
        index_paths(kb, [tmp_path / "d"])
        assert Retriever(kb).search("river", k=1)
        kb.close()
    finally:
        embedder_module._shared.clear()
        st.close()


def test_gguf_embedding_model_through_the_engine_child(tiny_gguf: Path) -> None:
    emb = make_embedder(str(tiny_gguf))
    try:
        v = emb.embed(["hello world", "good model"])
        assert v.shape == (2, 64) and emb.dimension == 64
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        assert emb.count_tokens("hello world") >= 2
    finally:
        emb.close()  # type: ignore[attr-defined]
