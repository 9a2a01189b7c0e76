"""Indexing jobs: files -> chunks -> vectors -> store, as an iterator of progress events.

A parser thread reads and chunks files while the caller's thread embeds, and the store's
own thread writes, so parsing and storing overlap with embedding. A file counts as done only
once all its chunks are stored; ids are deterministic (file + content hash + chunk index)
and written by upsert, so a cancelled or killed run resumes without duplicates.

A run holds the knowledge base's index lease (core.rag.lease), so a second Corral on the same
Chroma server is told who is indexing instead of interleaving with it. A rebuild indexes into
a new generation and swaps it in only when the run ends well.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core import failpoints
from core.errors import CorralError, DocumentUnreadable
from core.rag.catalogue import FileRecord
from core.rag.chunker import Chunk, Chunker, ChunkParams
from core.rag.document import Limits
from core.rag.embedder import Embedder
from core.rag.knowledge_base import KnowledgeBase
from core.rag.lease import IndexLease
from core.rag.loaders import check_size, decode_bytes, kind_of, load_document, scan

log = logging.getLogger(__name__)

FIRST_BATCH = 32


@dataclass
class IndexEvent:
    """One step of an index run. ``kind``: file, progress, removed, health, done, cancelled."""

    kind: str
    files_done: int = 0
    files_total: int = 0
    chunks: int = 0  # chunks embedded and stored in this run
    chunks_per_s: float = 0.0
    eta_s: float | None = None
    fraction: float = 0.0
    path: str = ""
    status: str = ""  # indexed, unchanged, skipped, removed
    reason: str = ""
    file_chunks: int = 0
    ok: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chunk_id(source: str, file_hash: str, index: int) -> str:
    return hashlib.sha1(f"{source}\x00{file_hash}\x00{index}".encode()).hexdigest()


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _under(source: str, roots: list[str]) -> bool:
    return any(source == r or source.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def sniff_kind(path: Path) -> str:
    """The loader for a file; unknown extensions are read as text if they look like text."""
    kind = kind_of(path)
    if kind is not None:
        return kind
    with path.open("rb") as fh:
        head = fh.read(8192)
    decode_bytes(head, str(path))  # raises "not a text file"
    return "text"


@dataclass
class _FileWork:
    path: Path
    size: int
    mtime_ns: int
    file_hash: str = ""
    chunks: int = 0  # chunks received from the parser so far
    waiting: int = 0  # received but not yet embedded
    complete: bool = False  # the parser has sent all of this file's chunks
    note: str = ""  # shown next to an indexed file ("3 of 120 pages have no text")
    #: the first chunk's metadata, when it was stored before the file's end was known
    head: dict[str, Any] | None = None
    refill: bool = False  # unchanged, but its chunks lack metadata this version records


def chunk_metadata(work: _FileWork, chunk: Chunk) -> dict[str, Any]:
    """What Chroma keeps with a chunk: enough to rebuild the catalogue and to cite it.

    ``start``/``end`` are the chunk's character offsets in its document's text; the first
    chunk of a file also carries the file's ``size``, ``mtime_ns`` and, once every chunk is
    known, ``file_chunks`` (a file without it in Chroma was not finished)."""
    meta: dict[str, Any] = {"source": str(work.path), "file_name": work.path.name,
                            "file_hash": work.file_hash, "chunk_index": chunk.index,
                            "tokens": chunk.tokens, "start": chunk.start, "end": chunk.end,
                            "mtime_ns": work.mtime_ns}
    if chunk.page is not None:
        meta["page"] = chunk.page
    if chunk.index == 0:
        meta["size"] = work.size
        if work.complete:
            meta["file_chunks"] = work.chunks
        else:
            work.head = meta
    return meta


@dataclass
class _Stats:
    files_total: int = 0
    files_done: int = 0
    chunks: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    started: float = field(default_factory=time.monotonic)


class IndexJob:
    """Index ``paths`` into ``kb``. Iterate it for events; ``cancel()`` from any thread."""

    def __init__(self, kb: KnowledgeBase, paths: Iterable[str | Path], *,
                 embedder: Embedder | None = None, batch_size: int = 128,
                 limits: Limits | None = None, remove_missing: bool = True,
                 health_sample: int = 8, stop_when: Callable[[], bool] | None = None,
                 rebuild: bool = False, params: ChunkParams | None = None) -> None:
        """``rebuild``: index into a new generation of ``kb`` (with ``embedder`` and
        ``params``, by default its own) and make it live when the run ends well."""
        self.kb = kb
        self.rebuild = rebuild
        self.params = params
        self.paths = [str(Path(p).expanduser().absolute()) for p in paths]
        self.embedder = embedder
        self.batch_size = batch_size
        self.limits = limits or Limits()
        self.remove_missing = remove_missing
        self.health_sample = health_sample
        self._cancel = threading.Event()
        self._stop_when = stop_when  # e.g. a GUI job's "cancelled" flag, polled
        self.stats = _Stats()
        self.results: list[IndexEvent] = []
        self.lease: IndexLease | None = None  # held while the run goes

    def cancel(self) -> None:
        self._cancel.set()

    def _check_lease(self) -> None:
        """Stop before writing more if another machine took the knowledge base over."""
        if self.lease is not None:
            self.lease.check()

    @property
    def cancelled(self) -> bool:
        if not self._cancel.is_set() and self._stop_when is not None and self._stop_when():
            self._cancel.set()
        return self._cancel.is_set()

    def __iter__(self) -> Iterator[IndexEvent]:
        return self.run()

    # --- the run --------------------------------------------------------------------------

    def _event(self, kind: str, **kw: Any) -> IndexEvent:
        s = self.stats
        elapsed = max(1e-6, time.monotonic() - s.started)
        rate = s.chunks / elapsed
        frac = s.bytes_done / s.bytes_total if s.bytes_total else (1.0 if kind == "done" else 0.0)
        eta = None
        if 0 < s.bytes_done < s.bytes_total:
            eta = elapsed * (s.bytes_total - s.bytes_done) / s.bytes_done
        ev = IndexEvent(kind=kind, files_done=s.files_done, files_total=s.files_total,
                        chunks=s.chunks, chunks_per_s=rate, eta_s=eta, fraction=frac, **kw)
        if kind == "file":
            self.results.append(ev)
        return ev

    def run(self) -> Iterator[IndexEvent]:
        live = self.kb
        with IndexLease(live.store, live.collection, live.name) as lease:
            self.lease = lease
            if not self.rebuild:
                yield from self._run()
                return
            self.kb = live.start_rebuild(self.embedder, self.params)
            swapped = False
            try:
                for ev in self._run():
                    if ev.kind == "done":
                        self.kb.go_live()
                        swapped = True
                    yield ev
            finally:
                if not swapped and self.kb.building:  # not marked live: the old one serves
                    try:
                        self.kb.abandon()
                    except CorralError as exc:  # the store is away: the next rebuild clears it
                        log.warning("could not drop the unfinished rebuild of %s: %s",
                                    self.kb.name, exc.sentence())
                self.kb.close()

    def _run(self) -> Iterator[IndexEvent]:
        emb = self.embedder or self.kb.embedder()
        self.kb.check_embedder(emb)
        chunker = Chunker(emb, self.kb.params)
        self.kb.catalogue.add_sources(self.paths)
        files, missing = scan(self.paths)
        excluded = self.kb.catalogue.excluded()
        if excluded:  # files the user removed stay out, unless dropped again by themselves
            again = excluded & set(self.paths)
            self.kb.catalogue.include(again)
            files = [f for f in files if str(f) not in excluded - again]
        records = self.kb.catalogue.all()
        s = self.stats
        s.files_total = len(files) + len(missing)
        for path, reason in missing:
            s.files_done += 1
            yield self._event("file", path=path, status="skipped", reason=reason)

        if self.remove_missing:
            present = {str(f) for f in files}
            for source in sorted(records):
                if source not in present and _under(source, self.paths):
                    self._remove(source)
                    yield self._event("file", path=source, status="removed")

        todo: list[_FileWork] = []
        for f in files:
            try:
                st = f.stat()
            except OSError as exc:
                s.files_done += 1
                yield self._event("file", path=str(f), status="skipped", reason=str(exc.strerror))
                continue
            rec = records.get(str(f))
            same_stat = rec is not None and rec.size == st.st_size and rec.mtime_ns == st.st_mtime_ns
            if rec is not None and same_stat and rec.status == "indexed" and \
                    str(f) in self.kb.stale_metadata:
                todo.append(_FileWork(f, st.st_size, st.st_mtime_ns, refill=True))
                s.bytes_total += max(1, st.st_size)
                continue
            if rec is not None and same_stat:
                s.files_done += 1
                status = "unchanged" if rec.status == "indexed" else "skipped"
                yield self._event("file", path=str(f), status=status, reason=rec.reason,
                                  file_chunks=rec.chunks)
                continue
            todo.append(_FileWork(f, st.st_size, st.st_mtime_ns))
            s.bytes_total += max(1, st.st_size)
        if todo and not self.cancelled:
            yield from self._pipeline(todo, emb, chunker, records)
        if self.cancelled:
            yield self._event("cancelled")
            return
        yield self._event("done")

    def _remove(self, source: str) -> None:
        self.kb.store.delete(self.kb.collection, where={"source": source})
        self.kb.keywords.delete_source(source)
        self.kb.catalogue.forget(source)

    # --- parser thread -> embed loop (this thread) -> store thread ------------------------

    def _parse_all(self, todo: list[_FileWork], chunker: Chunker,
                   records: dict[str, FileRecord], out: queue.Queue[Any]) -> None:
        try:
            for work in todo:
                if self.cancelled:
                    break
                self._parse_one(work, chunker, records, out)
        except BaseException as exc:  # never leave the consumer waiting
            out.put(("error", None, exc))
        finally:
            out.put(("end", None, None))

    def _parse_one(self, work: _FileWork, chunker: Chunker, records: dict[str, FileRecord],
                   out: queue.Queue[Any]) -> None:
        """Send ('same'|'skip'|'chunks'|'last', work, payload) messages for one file."""
        try:
            # from the stat taken when the run started: a huge file is never read or hashed
            check_size(work.path, work.size, self.limits)
            work.file_hash = file_hash(work.path)
            rec = records.get(str(work.path))
            # a skipped file is read again when touched: its reason may have been transient
            same = rec is not None and rec.status == "indexed" and rec.file_hash == work.file_hash
            if same and not work.refill:
                out.put(("same", work, rec))
                return
            work.refill = same
            sniff_kind(work.path)
            doc = load_document(work.path, self.limits)
            work.note = "; ".join(doc.notes)
        except DocumentUnreadable as exc:
            out.put(("skip", work, exc.reason))
            return
        except OSError as exc:
            out.put(("skip", work, f"cannot read the file ({exc.strerror or exc})"))
            return
        failpoints.reached("index.parsed")
        if work.refill:  # the same chunks again: only their metadata is sent
            out.put(("fill", work, list(chunker.iter_chunks(doc.units))))
            return
        part: list[Chunk] = []
        sent = 0
        for chunk in chunker.iter_chunks(doc.units):
            part.append(chunk)
            if len(part) >= self.batch_size:
                out.put(("chunks", work, part))
                sent += len(part)
                part = []
                if self.cancelled:
                    return
        if not sent and not part:
            out.put(("skip", work, "empty file" if work.size == 0 else "no text in this file"))
            return
        out.put(("last", work, part))

    def _pipeline(self, todo: list[_FileWork], emb: Embedder, chunker: Chunker,
                  records: dict[str, FileRecord]) -> Iterator[IndexEvent]:
        kb, store, s = self.kb, self.kb.store, self.stats
        parsed: queue.Queue[Any] = queue.Queue(maxsize=4)
        parser = threading.Thread(target=self._parse_all, args=(todo, chunker, records, parsed),
                                  name="corral-parse", daemon=True)
        parser.start()
        pending: list[tuple[_FileWork, Chunk]] = []
        # store futures in submission order; finished files carry their event
        inflight: list[tuple[Future[Any], IndexEvent | None]] = []
        sample: list[tuple[str, np.ndarray]] = []
        rng = random.Random(0)
        seen = 0

        def finalize(work: _FileWork, status: str, reason: str = "") -> None:
            self._check_lease()
            source = str(work.path)

            def run() -> None:
                col = kb.collection
                failpoints.reached("index.finalizing")
                old = records.get(source)
                if old is not None and old.status == "indexed" and (
                        status == "skipped" or old.file_hash != work.file_hash):
                    kb.catalogue.forget(source)  # it never claims vectors being dropped
                known = kb.stored_sources
                if status == "indexed" and (known is None or source in known):
                    # drop the chunks of older versions of the file
                    kb.store._on(col, lambda c: c.delete(where={"$and": [
                        {"source": source}, {"$or": [{"file_hash": {"$ne": work.file_hash}},
                                                     {"chunk_index": {"$gte": work.chunks}}]}]}))
                    kb.keywords.delete_source(source, keep_hash=work.file_hash)
                if status == "indexed" and known is not None:
                    known.add(source)
                if status == "indexed" and work.head is not None:
                    head = {**work.head, "file_chunks": work.chunks}  # the file is whole now
                    kb.store._on(col, lambda c: c.update(
                        ids=[chunk_id(source, work.file_hash, 0)], metadatas=[head]))
                if status == "skipped":
                    kb.store._on(col, lambda c: c.delete(where={"source": source}))
                    kb.keywords.delete_source(source)
                failpoints.reached("index.old-versions-dropped")
                kb.catalogue.put(FileRecord(
                    source, work.size, work.mtime_ns, work.file_hash, work.chunks,
                    "skipped" if status == "skipped" else "indexed", reason, time.time()))
                kb.stale_metadata.discard(source)

            ev = IndexEvent(kind="file", path=source, status=status, reason=reason,
                            file_chunks=work.chunks)
            inflight.append((store.submit(run), ev))
            s.bytes_done += max(1, work.size)

        def refill(work: _FileWork, chunks: list[Chunk]) -> None:
            """An unchanged file stored by an older Corral: complete its chunks' metadata
            (no embedding), or embed it again if it no longer cuts into the same chunks."""
            rec = records[str(work.path)]
            work.chunks, work.complete = len(chunks), True
            if len(chunks) != rec.chunks:
                work.waiting += len(chunks)
                pending.extend((work, c) for c in chunks)
                return
            ids = [chunk_id(str(work.path), work.file_hash, c.index) for c in chunks]
            metas = [chunk_metadata(work, c) for c in chunks]
            inflight.append((store.submit(lambda: kb.store._on(
                kb.collection, lambda col: col.update(ids=ids, metadatas=metas))), None))
            finalize(work, "unchanged", rec.reason)

        def drain(keep: int) -> Iterator[IndexEvent]:
            while inflight and (len(inflight) > keep or inflight[0][0].done()):
                fut, ev = inflight.pop(0)
                fut.result()
                if ev is not None:
                    s.files_done += 1
                    yield self._event("file", path=ev.path, status=ev.status, reason=ev.reason,
                                      file_chunks=ev.file_chunks)

        def flush() -> Iterator[IndexEvent]:
            nonlocal seen
            self._check_lease()
            batch = pending[:]
            pending.clear()
            texts = [c.text for _w, c in batch]
            vectors = emb.embed(texts)
            failpoints.reached("index.embedded")
            ids = [chunk_id(str(w.path), w.file_hash, c.index) for w, c in batch]
            srcs = [str(w.path) for w, _c in batch]
            hashes = [w.file_hash for w, _c in batch]
            metas: list[dict[str, Any]] = []
            for w, c in batch:
                metas.append(chunk_metadata(w, c))
            inflight.append((store.upsert(kb.collection, ids, vectors, texts, metas), None))
            def keywords() -> None:
                failpoints.reached("index.stored")
                kb.keywords.upsert(ids, srcs, hashes, texts)

            inflight.append((store.submit(keywords), None))
            s.chunks += len(batch)
            for i, cid in enumerate(ids):  # reservoir sample for the health check
                seen += 1
                if len(sample) < self.health_sample:
                    sample.append((cid, vectors[i].copy()))
                elif rng.random() < self.health_sample / seen:
                    sample[rng.randrange(self.health_sample)] = (cid, vectors[i].copy())
            for w, _c in batch:
                w.waiting -= 1
            for w in {id(w): w for w, _c in batch}.values():
                if w.complete and w.waiting == 0:
                    finalize(w, "indexed", w.note)
            yield from drain(keep=8)
            yield self._event("progress")

        try:
            while not self.cancelled:
                try:
                    kind, work, payload = parsed.get(timeout=0.2)
                except queue.Empty:
                    continue  # a slow file is being read: look at the cancel flag again
                if kind == "end":
                    if pending:
                        yield from flush()
                    break
                if kind == "error":
                    raise payload
                if kind == "same":
                    work.chunks = payload.chunks
                    finalize(work, "unchanged", payload.reason)
                elif kind == "fill":
                    refill(work, payload)
                elif kind == "skip":
                    finalize(work, "skipped", payload)
                else:
                    work.chunks += len(payload)
                    work.waiting += len(payload)
                    work.complete = kind == "last"
                    pending.extend((work, c) for c in payload)
                    if work.complete and work.waiting == 0:
                        finalize(work, "indexed", work.note)
                    # the first batch is small, so that embedding starts without waiting
                    size = self.batch_size if s.chunks else min(self.batch_size, FIRST_BATCH)
                    while len(pending) >= size and not self.cancelled:
                        head, rest = pending[:size], pending[size:]
                        pending[:] = head
                        yield from flush()
                        pending[:] = rest
                        size = self.batch_size
                yield from drain(keep=8)
        finally:
            self._stop_parser(parsed, parser)
            yield from drain(keep=0)
        if s.chunks:
            store.call(kb.keywords.refresh)
        if not self.cancelled and sample:
            yield self._health(sample)

    def _stop_parser(self, parsed: queue.Queue[Any], parser: threading.Thread) -> None:
        stop = not self.cancelled
        self._cancel.set()  # the parser stops at its next check
        # A file being read when the user cancels may take up to its time budget; after a
        # short wait the (daemon) parser is left to finish it alone, its output ignored.
        deadline = time.monotonic() + (2.0 if not stop else 3600.0)
        while parser.is_alive() and time.monotonic() < deadline:
            try:
                parsed.get(timeout=0.1)
            except queue.Empty:
                pass
        if stop:
            self._cancel.clear()

    def _health(self, sample: list[tuple[str, np.ndarray]]) -> IndexEvent:
        """Each sampled chunk must find itself (or an identical twin) at the top."""
        kb = self.kb
        misses = 0
        for cid, vec in sample:
            res = kb.store.query(kb.collection, vec, 3)
            ids = res["ids"][0]
            dists = res["distances"][0]
            if not ids or (cid not in ids[:1] and not (dists and dists[0] <= 1e-4)):
                misses += 1
        ok = misses == 0
        reason = "" if ok else (
            f"{misses} of {len(sample)} sampled chunks could not find themselves: "
            "the index looks damaged; rebuild the knowledge base"
        )
        return self._event("health", ok=ok, reason=reason)


def index_paths(kb: KnowledgeBase, paths: Iterable[str | Path], **kw: Any) -> list[IndexEvent]:
    """Run an index job to the end and return its per-file events (for scripts and tests)."""
    job = IndexJob(kb, paths, **kw)
    for ev in job:
        if ev.kind == "health" and not ev.ok:
            raise CorralError(ev.reason)
    return job.results


def has_changes(kb: KnowledgeBase, roots: list[str] | None = None) -> bool:
    """Cheap check for watch mode: did any file under the sources appear, change or vanish?"""
    roots = roots if roots is not None else kb.catalogue.sources()
    if not roots:
        return False
    files, _missing = scan(roots)
    excluded = kb.catalogue.excluded()
    files = [f for f in files if str(f) not in excluded]
    records = kb.catalogue.all()
    present = set()
    for f in files:
        present.add(str(f))
        rec = records.get(str(f))
        try:
            st = f.stat()
        except OSError:
            continue
        if rec is None or rec.size != st.st_size or rec.mtime_ns != st.st_mtime_ns:
            return True
    return any(src not in present and _under(src, roots) for src in records)
