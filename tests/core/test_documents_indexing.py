"""Index runs as a user lives them: re-dropping a folder, edits and deletions, cancel and
resume, damaged and oversized files; on an embedded store and on a `chroma run` server
(kills: test_documents_truth)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import Settings
from core.rag.indexing import IndexJob, has_changes, index_paths
from core.rag.knowledge_base import create_kb
from tests.fixtures.documents import minilm_embedder, prose, write_corpus

__all__ = ["minilm_embedder"]
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


class CountingEmbedder:
    """The real embedder, counting what it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.embedded = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, texts):
        self.embedded += len(texts)
        return self.inner.embed(texts)


@pytest.fixture
def embedded(store):
    """Named for history: each test runs on an embedded store and on a `chroma run` server."""
    return store


def all_ids(kb) -> list[str]:
    return kb.store.get(kb.collection, include=())["ids"]


def statuses(events) -> dict[str, str]:
    return {Path(e.path).name: e.status for e in events if e.kind == "file"}


def test_redrop_reindexes_only_changes_and_removes_deleted(embedded, tmp_path, minilm_embedder) -> None:
    docs = tmp_path / "docs"
    files = write_corpus(docs, n_files=3, words=150)
    (docs / "empty.txt").write_bytes(b"")
    kb = create_kb("notes", settings=Settings(), store=embedded)
    emb = CountingEmbedder(minilm_embedder)
    first = list(IndexJob(kb, [docs], embedder=emb))
    assert statuses(first)["empty.txt"] == "skipped"
    assert [e.reason for e in first if e.path.endswith("empty.txt")] == ["empty file"]
    count = embedded.count(kb.collection)

    emb.embedded = 0
    again = list(IndexJob(kb, [docs], embedder=emb))
    assert set(statuses(again).values()) == {"unchanged", "skipped"}
    assert emb.embedded == 0 and embedded.count(kb.collection) == count
    assert not has_changes(kb)

    files[0].write_text(prose(99, 40), encoding="utf-8")  # shorter: fewer chunks
    files[1].unlink()
    assert has_changes(kb)
    third = list(IndexJob(kb, [docs], embedder=emb))
    assert statuses(third) == {"note-000.txt": "indexed", "note-001.txt": "removed",
                               "note-002.txt": "unchanged", "empty.txt": "skipped"}
    ids = all_ids(kb)
    metas = kb.store.get(kb.collection, include=("metadatas",))["metadatas"]
    assert {Path(m["source"]).name for m in metas} == {"note-000.txt", "note-002.txt"}
    assert len(ids) == len(set(ids)) == kb.keywords.count()
    hits_for_old = [m for m in metas if m["source"].endswith("note-000.txt")]
    assert len(hits_for_old) == 1  # the old version's chunks are gone
    kb.close()


def test_cancel_then_resume_skips_finished_files(embedded, tmp_path, minilm_embedder) -> None:
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=4, words=120)
    kb = create_kb("resume", settings=Settings(), store=embedded)
    emb = CountingEmbedder(minilm_embedder)
    job = IndexJob(kb, [docs], embedder=emb, batch_size=2)
    done_before = []
    kinds = []
    for ev in job:
        kinds.append(ev.kind)
        if ev.kind == "file" and ev.status == "indexed":
            done_before.append(ev.path)
        if ev.kind == "progress":
            job.cancel()  # after the first batch of vectors
    assert kinds[-1] == "cancelled" and len(done_before) < 4
    emb.embedded = 0
    rest = statuses(IndexJob(kb, [docs], embedder=emb))
    assert {Path(p).name for p in done_before} <= {n for n, s in rest.items() if s == "unchanged"}
    assert list(rest.values()).count("indexed") == 4 - len(done_before)
    clean = create_kb("clean", settings=Settings(), store=embedded)
    index_paths(clean, [docs])
    assert sorted(all_ids(kb)) == sorted(all_ids(clean))
    kb.close()
    clean.close()


def test_pdf_pages_without_text_are_reported_and_the_rest_indexed(embedded, tmp_path,
                                                                  minilm_embedder) -> None:
    from tests.core.test_documents_loaders import mixed_pdf

    docs = tmp_path / "docs"
    docs.mkdir()
    mixed_pdf(docs / "atlas.pdf", ["Rivers carve valleys over ages.", None, "", "Glaciers move slowly."])
    kb = create_kb("atlas", settings=Settings(), store=embedded)
    first = [e for e in IndexJob(kb, [docs], embedder=minilm_embedder) if e.kind == "file"]
    assert [(e.status, e.reason) for e in first] == [("indexed", "2 of 4 pages have no text")]
    metas = kb.store.get(kb.collection, include=("metadatas",))["metadatas"]
    assert sorted(m["page"] for m in metas) == [1, 4]
    # the note stays with the file: on the next run, and in the catalogue the page lists
    again = [e for e in IndexJob(kb, [docs], embedder=minilm_embedder) if e.kind == "file"]
    assert [(e.status, e.reason) for e in again] == [("unchanged", "2 of 4 pages have no text")]
    assert kb.catalogue.all()[str(docs / "atlas.pdf")].reason == "2 of 4 pages have no text"
    kb.close()


def test_a_file_over_the_size_limit_is_skipped_unread_and_unhashed(embedded, tmp_path, monkeypatch,
                                                                   minilm_embedder) -> None:
    import core.rag.indexing as indexing

    docs = tmp_path / "docs"
    write_corpus(docs, n_files=1, words=60)
    huge = docs / "huge.txt"
    with huge.open("wb") as fh:
        fh.truncate(1024**3)  # 1 GB, sparse: costs no disk
    big_pdf = docs / "big.pdf"
    with big_pdf.open("wb") as fh:
        fh.truncate(256 * 1024 * 1024 + 1)  # one byte over the PDF limit
    hashed: list[str] = []
    opened: list[str] = []
    real_hash, real_open = indexing.file_hash, Path.open

    def spy_hash(path):
        hashed.append(Path(path).name)
        return real_hash(path)

    def spy_open(self, *a, **k):
        opened.append(self.name)
        return real_open(self, *a, **k)

    monkeypatch.setattr(indexing, "file_hash", spy_hash)
    monkeypatch.setattr(Path, "open", spy_open)
    kb = create_kb("limits", settings=Settings(), store=embedded)
    events = [e for e in IndexJob(kb, [docs], embedder=minilm_embedder) if e.kind == "file"]
    got = {Path(e.path).name: (e.status, e.reason) for e in events}
    assert got["huge.txt"] == ("skipped", "too large to index (1.0 GB; the limit is 64 MB)")
    assert got["big.pdf"] == ("skipped", "too large to index (268,435,457 bytes; the limit is "
                                         "268,435,456 bytes)")
    assert got["note-000.txt"][0] == "indexed" and "note-000.txt" in hashed
    assert {"huge.txt", "big.pdf"}.isdisjoint(hashed + opened)

    # unchanged, it keeps its reason (and is still not read); once it changes it is indexed
    again = {Path(e.path).name: (e.status, e.reason)
             for e in IndexJob(kb, [docs], embedder=minilm_embedder) if e.kind == "file"}
    assert again["huge.txt"] == got["huge.txt"] and again["big.pdf"] == got["big.pdf"]
    assert {"huge.txt", "big.pdf"}.isdisjoint(hashed + opened)
    huge.write_text(prose(7, 40), encoding="utf-8")
    third = {Path(e.path).name: (e.status, e.reason)
             for e in IndexJob(kb, [docs], embedder=minilm_embedder) if e.kind == "file"}
    assert third["huge.txt"] == ("indexed", "")
    kb.close()


def test_a_touched_skipped_file_is_still_skipped_with_its_reason(embedded, tmp_path,
                                                                 minilm_embedder) -> None:
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=1, words=60)
    empty = docs / "empty.txt"
    empty.write_bytes(b"")
    kb = create_kb("touch", settings=Settings(), store=embedded)
    list(IndexJob(kb, [docs], embedder=minilm_embedder))
    st = empty.stat()
    os.utime(empty, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, new time
    again = [e for e in IndexJob(kb, [docs], embedder=minilm_embedder)
             if e.kind == "file" and e.path.endswith("empty.txt")]
    assert [(e.status, e.reason) for e in again] == [("skipped", "empty file")]
    assert kb.catalogue.all()[str(empty)].status == "skipped"
    kb.close()
