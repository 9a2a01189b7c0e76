"""Chroma is the truth: kill -9 at many points of an index run and of a rebuild, a lost or
stale catalogue, and two data folders ("machines") on one `chroma run` server.

Kills are real SIGKILLs, sent by the indexing process to itself at a named fail point
(core.failpoints), so each lands at a known step: after a file is parsed, after a batch is
embedded, after its vectors are stored, while a file is being finished, after its old
versions are dropped, and between a rebuild's swap and its clean-up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings, StoreSettings
from core.errors import KnowledgeBaseBusy
from core.rag import lease as lease_module
from core.rag.indexing import IndexJob, index_paths
from core.rag.knowledge_base import KnowledgeBase, _collections_of, _live, create_kb, open_kb
from core.rag.retriever import Retriever
from core.rag.store import Store, close_stores
from tests.fixtures.documents import minilm_embedder, prose, write_corpus

__all__ = ["minilm_embedder"]
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

#: each run resumes the last one and is killed at the next point (name:N = the N-th time)
KILL_POINTS = ["index.parsed:2", "index.embedded:2", "index.stored:2", "index.finalizing:2",
               "index.old-versions-dropped:1", "index.parsed:1"]


@pytest.fixture
def where(store_settings: Settings) -> Settings:
    """Settings naming an embedded store under CORRAL_HOME or the session's `chroma run`."""
    return store_settings


def store_for(settings: Settings) -> Store:
    cfg = settings.store
    if cfg.mode == "server":
        return Store(mode="server", host=cfg.host, port=cfg.port).open()
    return Store(mode="embedded", path=Path(os.environ["CORRAL_HOME"]) / "chroma").open()


def index_in_child(docs: Path, kb: str, *extra: str, kill_at: str = "") -> subprocess.CompletedProcess[str]:
    code = ("import sys; from core.cli import main; "
            f"sys.exit(main(['index', {str(docs)!r}, '--kb', {kb!r}, '--json', '--batch', '3', "
            f"*{list(extra)!r}]))")
    env = dict(os.environ, PYTHONPATH=str(ROOT), CORRAL_KILL_AT=kill_at)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def raw_kb(store: Store, name: str) -> KnowledgeBase:
    """The live generation as it is on disk: its catalogue not yet checked against Chroma."""
    live = _live(_collections_of(store, name))
    assert live is not None
    return KnowledgeBase(name, store, live[1], collection=live[0])


def assert_catalogue_claims_only_whole_files(kb: KnowledgeBase, point: str = "") -> None:
    counts = kb.chunk_counts()
    for source, rec in kb.catalogue.all().items():
        if rec.status == "indexed":
            assert counts.get((source, rec.file_hash)) == rec.chunks, (point, source, counts)


def chunk_keys(kb: KnowledgeBase) -> list[tuple[str, int]]:
    return [(m["source"], m["chunk_index"])
            for _i, _t, metas, _v in kb.iter_chunks(embeddings=False, texts=False) for m in metas]


def test_kill_9_at_six_points_then_resume_matches_a_clean_run(where: Settings, tmp_path: Path,
                                                               minilm_embedder) -> None:
    docs = tmp_path / "docs"
    files = write_corpus(docs, n_files=4, words=150)
    name = f"crash {where.store.mode}"
    for n, point in enumerate(KILL_POINTS):
        for i in range(2):  # the user drops more files between runs
            (docs / f"more-{n}-{i}.txt").write_text(prose(100 + 2 * n + i, 150), encoding="utf-8")
        if n == 3:  # two files change between runs: their old versions must go
            for f in files[:2]:
                f.write_text(prose(77 + files.index(f), 150), encoding="utf-8")
        close_stores()  # the child owns an embedded store while it runs
        run = index_in_child(docs, name, kill_at=point)
        assert run.returncode == -signal.SIGKILL, (point, run.returncode, run.stderr[-2000:])
        st = store_for(where)
        try:
            kb = raw_kb(st, name)
            assert_catalogue_claims_only_whole_files(kb, point)
            kb.close()
        finally:
            st.close()
    done = index_in_child(docs, name)
    assert done.returncode == 0, done.stderr[-2000:]
    st = store_for(where)
    try:
        kb = open_kb(name, settings=where, store=st)
        clean = create_kb(f"clean {where.store.mode}", settings=where, store=st)
        index_paths(clean, [docs])
        keys, clean_keys = chunk_keys(kb), chunk_keys(clean)
        assert len(keys) == len(set(keys))  # no chunk twice, no old version left
        assert sorted(keys) == sorted(clean_keys)
        assert sorted(kb.keywords.ids()) == sorted(kb.store.get(kb.collection, include=())["ids"])
        assert {s: r.chunks for s, r in kb.catalogue.all().items()} == \
            {s: r.chunks for s, r in clean.catalogue.all().items()}
        kb.close()
        clean.close()
    finally:
        st.close()


def test_a_kill_during_rebuild_leaves_the_old_or_the_new_one_whole(where: Settings, tmp_path: Path,
                                                                   minilm_embedder) -> None:
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=5, words=150)
    name = f"rebuilt {where.store.mode}"
    st = store_for(where)
    kb = create_kb(name, settings=where, store=st)
    index_paths(kb, [docs])
    before = sorted(chunk_keys(kb))
    kb.close()
    st.close()

    close_stores()
    run = index_in_child(docs, name, "--rebuild", kill_at="index.stored:1")  # half built
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    st = store_for(where)
    kb = open_kb(name, settings=where, store=st)
    assert kb.generation == 0 and sorted(chunk_keys(kb)) == before  # the old one serves
    assert Retriever(kb).search("orbit planet", k=3)
    kb.close()
    st.close()

    close_stores()
    run = index_in_child(docs, name, "--rebuild", kill_at="rebuild.live")  # swapped, not tidied
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    st = store_for(where)
    kb = open_kb(name, settings=where, store=st)
    assert kb.generation >= 1 and sorted(chunk_keys(kb)) == before  # the new one, whole
    assert [c for c, _m in _collections_of(st, name)] == [kb.collection]  # the rest cleared
    assert kb.catalogue.sources() == [str(docs)]  # the folders it indexes came along
    assert Retriever(kb).search("orbit planet", k=3)
    kb.close()
    st.close()


def test_a_deleted_collection_under_a_surviving_catalogue_is_indexed_again(
        tmp_path: Path, minilm_embedder) -> None:
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=3, words=120)
    st = Store(mode="embedded", path=tmp_path / "chroma").open()
    kb = create_kb("wiped", settings=Settings(), store=st)
    index_paths(kb, [docs])
    count = st.count(kb.collection)
    meta = dict(kb.metadata)
    kb.close()
    st.delete_collection(kb.collection)  # a reset of the Chroma folder, another machine...
    st.create_collection(kb.collection, meta)
    again = open_kb("wiped", settings=Settings(), store=st)
    assert again.catalogue.all() == {}  # nothing is "unchanged" without its vectors
    events = index_paths(again, [docs])
    assert {e.status for e in events} == {"indexed"}
    assert st.count(again.collection) == count
    again.close()
    st.close()


def test_older_chunks_get_their_offsets_without_being_embedded_again(
        tmp_path: Path, minilm_embedder) -> None:
    from tests.core.test_documents_indexing import CountingEmbedder

    docs = tmp_path / "docs"
    write_corpus(docs, n_files=2, words=300)
    st = Store(mode="embedded", path=tmp_path / "chroma").open()
    kb = create_kb("older", settings=Settings(), store=st)
    index_paths(kb, [docs])
    got = st.get(kb.collection, include=("metadatas", "documents", "embeddings"))
    legacy = [{k: v for k, v in m.items() if k not in ("start", "end", "size", "mtime_ns",
                                                       "file_chunks")} for m in got["metadatas"]]
    st.delete(kb.collection, ids=got["ids"])  # written again as an older Corral wrote them
    st.upsert(kb.collection, got["ids"], got["embeddings"], got["documents"], legacy).result()
    kb.close()

    again = open_kb("older", settings=Settings(), store=st)  # as an older Corral left it
    assert again.stale_metadata == {str(p) for p in docs.iterdir()}
    counting = CountingEmbedder(minilm_embedder)
    events = index_paths(again, [docs], embedder=counting)
    assert {e.status for e in events} == {"unchanged"} and counting.embedded == 0
    for text, meta in zip(*(lambda g: (g["documents"], g["metadatas"]))(
            st.get(again.collection)), strict=True):
        from core.rag.loaders import load_document

        assert load_document(Path(meta["source"])).text[meta["start"]:meta["end"]] == text
    again.close()
    st.close()


# --- two machines on one server ---------------------------------------------------------------


def as_machine(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Switch this process to another data folder, as a second machine would have."""
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("CORRAL_HOME", str(home))


def test_a_second_data_folder_sees_the_same_knowledge_bases_files_and_results(
        chroma_server, tmp_path: Path, monkeypatch, minilm_embedder) -> None:
    settings = Settings(store=StoreSettings(mode="server", host=chroma_server.host,
                                            port=chroma_server.port))
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=4, words=150)
    (docs / "timeouts.txt").write_text("The python client raises a timeout after 30 s.\n",
                                       encoding="utf-8")
    as_machine(monkeypatch, tmp_path / "machine-a")
    a_store = Store(mode="server", host=chroma_server.host, port=chroma_server.port).open()
    kb = create_kb("shared handbook", settings=settings, store=a_store)
    index_paths(kb, [docs])
    kb.hybrid_weight = 0.7
    a_hits = [(h.id, round(h.fused_score, 6)) for h in Retriever(kb).search("python timeout", k=4)]
    a_files = {s: (r.file_hash, r.chunks) for s, r in kb.catalogue.all().items()}
    kb.close()

    as_machine(monkeypatch, tmp_path / "machine-b")
    b_store = Store(mode="server", host=chroma_server.host, port=chroma_server.port).open()
    from core.rag.knowledge_base import list_kbs

    listed = {i.name: i for i in list_kbs(settings=settings, store=b_store)}
    assert listed["shared handbook"].files == 5
    b = open_kb("shared handbook", settings=settings, store=b_store)
    assert {s: (r.file_hash, r.chunks) for s, r in b.catalogue.all().items()} == a_files
    assert b.hybrid_weight == 0.7
    b_hits = [(h.id, round(h.fused_score, 6)) for h in Retriever(b).search("python timeout", k=4)]
    assert b_hits == a_hits
    assert b.keywords.count() == b_store.count(b.collection)
    # re-indexing the same folder from machine B embeds nothing: all is known to be whole
    assert {e.status for e in index_paths(b, [docs])} == {"unchanged"}
    b.close()
    a_store.close()
    b_store.close()


def test_indexing_a_knowledge_base_another_machine_holds_says_who(
        chroma_server, tmp_path: Path, monkeypatch, minilm_embedder) -> None:
    settings = Settings(store=StoreSettings(mode="server", host=chroma_server.host,
                                            port=chroma_server.port))
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=2, words=80)
    st = Store(mode="server", host=chroma_server.host, port=chroma_server.port).open()
    kb = create_kb("contested", settings=settings, store=st)
    other = create_kb("elsewhere", settings=settings, store=st)
    monkeypatch.setattr(lease_module, "holder_name", lambda: "laptop-b (pid 4242)")
    monkeypatch.setattr(lease_module.socket, "gethostname", lambda: "laptop-b")
    held = lease_module.IndexLease(st, kb.collection, kb.name).acquire()  # machine B indexes
    monkeypatch.undo()
    try:
        with pytest.raises(KnowledgeBaseBusy) as info:
            list(IndexJob(kb, [docs]))
        assert "laptop-b (pid 4242)" in info.value.sentence()
        assert "runs out" in info.value.sentence()
        assert {e.status for e in index_paths(other, [docs])} == {"indexed"}  # another KB: fine
    finally:
        held.release()
    assert {e.status for e in index_paths(kb, [docs])} == {"indexed"}
    kb.close()
    other.close()
    st.close()


def test_a_lease_whose_holder_died_runs_out(chroma_server, tmp_path: Path, monkeypatch) -> None:
    st = Store(mode="server", host=chroma_server.host, port=chroma_server.port).open()
    name = "orphaned lease"
    st.create_collection("kb-orphaned", {"corral_kb": name})
    claim = json.dumps({"holder": "gone-machine (pid 1)", "host": "gone-machine", "pid": 1})
    import time

    st.update_metadata("kb-orphaned", {"corral_lease": claim,
                                       "corral_lease_until": time.time() + 1.0})
    mine = lease_module.IndexLease(st, "kb-orphaned", name)
    with pytest.raises(KnowledgeBaseBusy):
        mine.acquire()
    time.sleep(1.2)  # the holder stopped renewing
    mine.acquire().release()
    # a holder on this machine whose process is gone holds nothing, at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    claim = json.dumps({"holder": "me", "host": lease_module.socket.gethostname(),
                        "pid": int(dead.stdout)})
    st.update_metadata("kb-orphaned", {"corral_lease": claim,
                                       "corral_lease_until": time.time() + 60})
    lease_module.IndexLease(st, "kb-orphaned", name).acquire().release()
    st.delete_collection("kb-orphaned")
    st.close()


@pytest.mark.parametrize("how", ["taken over", "not renewable"])
def test_a_run_that_loses_its_lease_stops_before_writing_more(
        chroma_server, tmp_path: Path, monkeypatch, minilm_embedder, how: str) -> None:
    """A claim that ran out while the store was away, or that another machine took over,
    is lost: the run stops with a clear error before its next write, what it stored stays
    whole, and the next run finishes the job."""
    import time

    monkeypatch.setattr(lease_module, "LEASE_S", 1.5)  # renewed every 0.5 s
    settings = Settings(store=StoreSettings(mode="server", host=chroma_server.host,
                                            port=chroma_server.port))
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=8, words=150)
    st = Store(mode="server", host=chroma_server.host, port=chroma_server.port).open()
    kb = create_kb(f"lost lease {how}", settings=settings, store=st)
    write = lease_module.IndexLease._write
    broken: list[bool] = []

    def flaky_write(self: lease_module.IndexLease, until: float) -> None:
        if broken:
            raise OSError("the server did not answer")
        write(self, until)

    monkeypatch.setattr(lease_module.IndexLease, "_write", flaky_write)
    job = IndexJob(kb, [docs], batch_size=3)
    events = iter(job)
    with pytest.raises(KnowledgeBaseBusy) as info:
        for ev in events:
            if ev.kind == "file" and not broken:
                if how == "taken over":  # machine B: this one's claim had run out meanwhile
                    claim = json.dumps({"holder": "laptop-b (pid 4242)", "host": "laptop-b",
                                        "pid": 4242})
                    st.update_metadata(kb.collection, {"corral_lease": claim,
                                                       "corral_lease_until": time.time() + 60})
                broken.append(True)
                time.sleep(2.0)  # the renewal thread notices
    stopped = info.value.sentence()
    assert "claim on it was lost" in stopped and "Index again" in stopped
    assert ("laptop-b (pid 4242) holds it now" if how == "taken over"
            else "could not be renewed") in stopped
    done = [e for e in job.results if e.status == "indexed"]
    assert 1 <= len(done) < 8  # it stopped part-way
    assert_catalogue_claims_only_whole_files(kb, how)
    if how == "taken over":  # B's claim is left alone
        assert lease_module.IndexLease(st, kb.collection, kb.name).holder()[0] == "laptop-b (pid 4242)"
        st.update_metadata(kb.collection, {"corral_lease": "", "corral_lease_until": 0.0})
    broken.clear()
    statuses = [e.status for e in index_paths(kb, [docs])]
    assert sorted(statuses) == sorted(["unchanged"] * len(done) + ["indexed"] * (8 - len(done)))
    assert_catalogue_claims_only_whole_files(kb)
    assert len(chunk_keys(kb)) == len(set(chunk_keys(kb)))
    kb.close()
    st.close()


@pytest.mark.parametrize("dies", ["before the swap", "after the swap"])
def test_a_server_that_dies_during_a_rebuild_swap_leaves_one_whole_generation(
        tmp_path: Path, monkeypatch, minilm_embedder, dies: str) -> None:
    """The Chroma server itself dies as a rebuild goes live: the run fails with a clear
    error, and once the server is back the knowledge base is whole: the old generation if
    the new one was not marked live yet, else the new one, with the old one cleared."""
    from core import failpoints
    from core.errors import BackendUnavailable, CorralError
    from core.rag.knowledge_base import KnowledgeBase as KB
    from tests.fixtures.chroma import start_chroma, stop_chroma

    server = start_chroma(tmp_path / "data")
    settings = Settings(store=StoreSettings(mode="server", host=server.host, port=server.port))
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=4, words=150)
    try:
        st = Store(mode="server", host=server.host, port=server.port).open()
        kb = create_kb("swapped", settings=settings, store=st)
        index_paths(kb, [docs])
        before = sorted(chunk_keys(kb))

        def kill_server() -> None:
            server.process.kill()
            server.process.wait()

        if dies == "before the swap":
            go_live = KB.go_live
            monkeypatch.setattr(KB, "go_live", lambda self: (kill_server(), go_live(self)))
        else:
            reached = failpoints.reached
            monkeypatch.setattr(failpoints, "reached", lambda name: (
                kill_server() if name == "rebuild.live" else reached(name)))
        with pytest.raises(CorralError) as info:
            list(IndexJob(kb, [docs], rebuild=True))
        assert isinstance(info.value, BackendUnavailable)
        assert f"Chroma server at http://127.0.0.1:{server.port}" in info.value.sentence()
        monkeypatch.undo()
        close_stores()

        server = start_chroma(server.path, port=server.port)  # the server is back
        st = Store(mode="server", host=server.host, port=server.port).open()
        kb = open_kb("swapped", settings=settings, store=st)
        assert sorted(chunk_keys(kb)) == before
        assert kb.generation == (0 if dies == "before the swap" else 1)
        assert Retriever(kb).search("orbit planet", k=3)
        if dies == "after the swap":
            assert [c for c, _m in _collections_of(st, "swapped")] == [kb.collection]
        assert {e.status for e in IndexJob(kb, [docs], rebuild=True)} >= {"indexed"}
        assert len(_collections_of(st, "swapped")) == 1  # a half-built leftover was cleared
        kb.close()
        st.close()
    finally:
        stop_chroma(server)
