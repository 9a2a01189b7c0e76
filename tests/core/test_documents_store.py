"""Knowledge bases on a real Chroma, embedded and `chroma run` server: the same tests both
ways. Indexing, search with page numbers, embedder mismatch, batching, health check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.config import Settings
from core.errors import EmbedderMismatch, StoreLocked
from core.rag.embedder import SentenceTransformerEmbedder
from core.rag.indexing import IndexJob, index_paths
from core.rag.knowledge_base import create_kb, list_kbs, open_kb, remove_kb
from core.rag.retriever import Retriever
from core.rag.store import Store
from tests.fixtures.documents import kb_name, make_pdf, minilm_embedder, prose, store, write_corpus

__all__ = ["kb_name", "minilm_embedder", "store"]
pytestmark = pytest.mark.slow


def test_index_and_search_finds_the_page(store: Store, kb_name: str, tmp_path: Path, minilm_embedder) -> None:
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=2, words=120)
    make_pdf(docs / "manual.pdf", ["Introduction to the copper engine.",
                                   "The violin is tuned with four silver pegs before each concert."])
    kb = create_kb(kb_name, settings=Settings(), store=store)
    results = index_paths(kb, [docs])
    assert {Path(r.path).name: r.status for r in results} == {
        "note-000.txt": "indexed", "note-001.txt": "indexed", "manual.pdf": "indexed"}
    total = sum(r.file_chunks for r in results)
    assert store.count(kb.collection) == total == kb.keywords.count()

    hits = Retriever(kb).search("how is the violin tuned before a concert", k=3)
    assert hits[0].source.endswith("manual.pdf") and hits[0].page == 2
    assert 0.3 < hits[0].score <= 1.0 and hits[0].chunk_index == 1
    assert [h.to_dict()["page"] for h in hits[:1]] == [2]

    infos = {i.name: i for i in list_kbs(settings=Settings(), store=store)}
    assert infos[kb_name].chunks == total and infos[kb_name].files == 3
    kb.close()
    remove_kb(kb_name, settings=Settings(), store=store)
    assert kb_name not in {i.name for i in list_kbs(settings=Settings(), store=store)}


def test_another_embedder_is_refused(store: Store, kb_name: str, minilm_embedder) -> None:
    kb = create_kb(kb_name, settings=Settings(), store=store)

    class OtherMiniLM(SentenceTransformerEmbedder):
        mode = "fast"

    other = OtherMiniLM(Path(minilm_embedder.folder), name=minilm_embedder.name)
    with pytest.raises(EmbedderMismatch) as info:
        list(IndexJob(kb, [], embedder=other))
    assert "re-index" in info.value.sentence().lower()
    list(IndexJob(kb, [], embedder=other, rebuild=True))  # what the user is offered
    assert open_kb(kb_name, settings=Settings(), store=store).mode == "fast"
    kb.close()


def test_upserts_respect_the_store_batch_size(store: Store, kb_name: str, tmp_path: Path,
                                              minilm_embedder) -> None:
    write_corpus(tmp_path / "d", n_files=2, words=300)
    store._max_batch = 2  # as if the server accepted only 2 records per call
    kb = create_kb(kb_name, settings=Settings(), store=store)
    events = list(IndexJob(kb, [tmp_path / "d"]))
    n = sum(e.file_chunks for e in events if e.kind == "file")
    assert n > 4 and store.count(kb.collection) == n
    health = [e for e in events if e.kind == "health"]
    assert health and health[0].ok
    kb.close()


def test_a_second_process_is_told_the_store_is_locked(tmp_path: Path) -> None:
    st = Store(mode="embedded", path=tmp_path / "chroma").open()
    try:
        code = (
            "from pathlib import Path; from core.rag.store import Store; from core.errors import StoreLocked\n"
            f"try:\n  Store(mode='embedded', path=Path({str(tmp_path / 'chroma')!r})).open()\n"
            "except StoreLocked as e:\n  print(e.sentence())\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             cwd=Path(__file__).resolve().parents[2]).stdout
        assert "open in another Corral process" in out and "Chroma server" in out
        with pytest.raises(StoreLocked):
            Store(mode="embedded", path=tmp_path / "chroma").open()
    finally:
        st.close()
    Store(mode="embedded", path=tmp_path / "chroma").open().close()  # released


def test_a_plain_chromadb_client_finds_the_vectors(tmp_path: Path, kb_name: str, minilm_embedder) -> None:
    write_corpus(tmp_path / "d", n_files=1, words=100)
    st = Store(mode="embedded", path=tmp_path / "chroma").open()
    kb = create_kb(kb_name, settings=Settings(), store=st)
    index_paths(kb, [tmp_path / "d"])
    expected = st.count(kb.collection)
    probe = minilm_embedder.embed([prose(0, 100)])[0]
    np.save(tmp_path / "probe.npy", probe)
    kb.close()
    st.close()
    code = (
        "import chromadb, numpy as np\n"
        f"c = chromadb.PersistentClient(path={str(tmp_path / 'chroma')!r})\n"
        f"col = c.get_collection({kb.collection!r}, embedding_function=None)\n"
        f"r = col.query(query_embeddings=[np.load({str(tmp_path / 'probe.npy')!r})], n_results=1)\n"
        "print(col.count(), col.metadata['corral_embedder'], r['metadatas'][0][0]['file_name'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == [str(expected), "all-MiniLM-L6-v2", "note-000.txt"], out.stderr


def test_a_chroma_server_that_does_not_answer_is_named(tmp_path: Path) -> None:
    import socket

    from core.errors import BackendUnavailable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendUnavailable) as info:
        Store(mode="server", host="127.0.0.1", port=port).open()
    assert f"127.0.0.1:{port} does not answer" in info.value.sentence()
