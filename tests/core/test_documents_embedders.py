"""Embedders behind one interface: bundled MiniLM (offline), Ollama's /api/embed, a GGUF
through the engine child; vectors normalised; fast modes fall back with a clear notice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.config import Settings
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


def test_damaged_weights_are_a_model_error_not_a_crash(tmp_path: Path) -> None:
    src = minilm_path()
    folder = tmp_path / "damaged"
    folder.mkdir()
    for item in src.iterdir():
        if item.name != "model.safetensors":
            (folder / item.name).symlink_to(item)
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelNotFound, match="cannot load the embedding model"):
        make_embedder(str(folder)).embed(["hello"])


def test_fast_mode_that_cannot_write_its_cache_falls_back_with_a_notice(monkeypatch) -> None:
    def no_room(*_a, **_k):
        raise OSError(28, "No space left on device")

    from core.rag import fast_embedder

    monkeypatch.setattr(fast_embedder, "make_fast_embedder", no_room)
    notices: list[str] = []
    emb = make_embedder("minilm", mode="fast", notice=notices.append)
    assert emb.mode == "standard"
    assert notices and "No space left" in notices[0] and "standard" in notices[0]


def test_a_bug_in_the_fast_embedder_is_not_passed_off_as_unavailable(monkeypatch) -> None:
    """A programming error raises with its own type and traceback: no "fast mode unavailable"
    notice, no quiet fall back to the standard embedder."""
    pytest.importorskip("openvino")
    from core.rag import fast_embedder

    def buggy(*_a, **_k):
        return None.shape  # type: ignore[attr-defined]  # the kind of slip a refactor leaves

    monkeypatch.setattr(fast_embedder, "variant_dir", buggy)  # deep inside make_fast_embedder
    notices: list[str] = []
    with pytest.raises(AttributeError, match="shape"):
        make_embedder("minilm", mode="fast", notice=notices.append)
    assert notices == []


def test_a_bug_in_fast_pooling_raises_as_itself_while_openvino_errors_are_sentences() -> None:
    from core.rag.encoding import Encoder
    from core.rag.fast_embedder import FastEmbedder

    class Request:
        def __init__(self, inputs: dict, hidden: np.ndarray | Exception) -> None:
            self.inputs, self.hidden = inputs, hidden

        def get_tensor(self, name: str):
            return type("T", (), {"data": self.inputs[name]})

        def get_output_tensor(self, _i: int):
            if isinstance(self.hidden, Exception):
                raise self.hidden
            return type("T", (), {"data": self.hidden})

    class Queue:  # OpenVINO's AsyncInferQueue, run inline
        def __init__(self, hidden) -> None:
            self.hidden = hidden

        def start_async(self, inputs: dict, rows) -> None:
            n, length = inputs["input_ids"].shape
            hidden = self.hidden(n, length) if callable(self.hidden) else self.hidden
            emb._collect(Request(inputs, hidden), rows)

        def wait_all(self) -> None:
            pass

    import threading

    emb = FastEmbedder.__new__(FastEmbedder)
    emb.mode, emb.batch_size, emb._dimension, emb._lock = "fast", 16, 4, threading.Lock()
    emb._encoder = Encoder(minilm_path() / "tokenizer.json", 256, ["input_ids", "attention_mask"])
    emb._queue = Queue(lambda n, length: np.ones((n, length, 4), dtype=np.float32))
    assert emb.embed(["works", "when all is well"]).shape == (2, 4)
    emb._queue = Queue(lambda n, length: np.ones((n, length + 1, 4), dtype=np.float32))  # a bug
    with pytest.raises(ValueError):
        emb.embed(["a shape slip"])
    emb._queue = Queue(RuntimeError("Infer Request was canceled"))  # OpenVINO's own failure
    with pytest.raises(CorralError, match="the fast embedder failed: Infer Request"):
        emb.embed(["openvino failed"])


def test_ollama_embedding_model_indexes_and_searches(ollama_server, tmp_path: Path) -> None:
    # the host comes from the settings passed in (nothing in the environment, no file read)
    settings = Settings()
    settings.ollama.host = ollama_server.host
    ollama_server.add_model("nomic-embed-text", family="nomic-bert")
    emb = make_embedder("ollama:nomic-embed-text", ollama=settings.ollama)
    v = emb.embed(["one", "two"])
    assert v.shape == (2, ollama_server.embed_dim)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert ollama_server.requests_to("/api/embed")

    write_corpus(tmp_path / "d", n_files=2, words=40)
    st = Store(mode="embedded", path=tmp_path / "chroma").open()
    try:
        embedder_module._shared.clear()
        kb = create_kb("ollama kb", embedder="ollama:nomic-embed-text", settings=settings, store=st)
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
