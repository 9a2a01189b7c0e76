"""Index runs as a user lives them: re-dropping a folder, edits and deletions, cancel and
resume, and a kill -9 in the middle followed by a re-run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings
from core.rag.indexing import IndexJob, has_changes, index_paths
from core.rag.knowledge_base import create_kb, open_kb
from core.rag.store import Store, close_stores, open_store
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
def embedded(tmp_path: Path):
    st = Store(mode="embedded", path=tmp_path / "chroma").open()
    yield st
    st.close()


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


def test_kill_9_at_random_points_then_rerun_matches_a_clean_run(tmp_path, corral_home, minilm_embedder) -> None:
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=6, words=160)
    settings = Settings()
    code = ("import sys; from core.cli import main; "
            f"sys.exit(main(['index', {str(docs)!r}, '--kb', 'crash', '--json', '--batch', '3']))")
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    close_stores()  # the child must own the store while it runs
    for _attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        wanted = rng.randint(0, 5)
        assert proc.stdout is not None
        seen = 0
        while seen < wanted:
            line = proc.stdout.readline()
            if not line:
                break
            if json.loads(line).get("event") == "file":
                seen += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    st = open_store(settings)
    kb = open_kb("crash", settings=Settings(), store=st)
    index_paths(kb, [docs])
    clean = create_kb("clean", settings=Settings(), store=st)
    index_paths(clean, [docs])
    ids, clean_ids = all_ids(kb), all_ids(clean)
    assert len(ids) == len(set(ids)) == st.count(kb.collection)
    assert sorted(ids) == sorted(clean_ids)
    assert kb.keywords.count() == len(ids)
    kb.close()
    clean.close()
