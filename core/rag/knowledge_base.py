"""Knowledge bases: a Chroma collection (vectors) plus a local catalogue (files, keywords).

The collection's metadata records the embedder (name, spec, mode, dimension) and the chunk
parameters; opening a knowledge base with another embedder raises EmbedderMismatch rather
than mixing vector spaces. The local catalogue (``<data>/knowledge/<collection>/``) keeps
which file versions are fully indexed, the folders it watches, and the keyword index.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.config import OllamaSettings, Settings, data_dir
from core.errors import CorralError, EmbedderMismatch, KnowledgeBaseNotFound
from core.rag.chunker import ChunkParams
from core.rag.embedder import Embedder, Notice, shared_embedder
from core.rag.keyword import KeywordIndex
from core.rag.store import Store, open_store

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,62}$")
KB_MARK = "corral_kb"


def collection_name(name: str) -> str:
    """Chroma collection for a knowledge base name (3-63 chars of [a-z0-9_-])."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "kb"
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"kb-{slug}-{digest}"


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise CorralError(
            f"{name!r} is not a valid knowledge base name",
            hint="Use 1-63 letters, digits, spaces, dots, dashes or underscores.",
        )
    return name


@dataclass
class FileRecord:
    source: str  # absolute path
    size: int
    mtime_ns: int
    file_hash: str
    chunks: int
    status: str  # "indexed" or "skipped"
    reason: str = ""
    indexed_at: float = 0.0


class Catalogue:
    """The local SQLite side of a knowledge base: file records, sources, settings."""

    _SCHEMA = """
    PRAGMA journal_mode=WAL;
    CREATE TABLE IF NOT EXISTS files (
        source TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, file_hash TEXT,
        chunks INTEGER, status TEXT, reason TEXT, indexed_at REAL
    );
    CREATE TABLE IF NOT EXISTS sources (root TEXT PRIMARY KEY);
    CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE IF NOT EXISTS excluded (source TEXT PRIMARY KEY);
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(self._SCHEMA)

    def get(self, source: str) -> FileRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM files WHERE source = ?", (source,)).fetchone()
        return FileRecord(*row) if row else None

    def all(self) -> dict[str, FileRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM files").fetchall()
        return {r[0]: FileRecord(*r) for r in rows}

    def put(self, rec: FileRecord) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (rec.source, rec.size, rec.mtime_ns, rec.file_hash, rec.chunks, rec.status,
                 rec.reason, rec.indexed_at),
            )

    def forget(self, source: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM files WHERE source = ?", (source,))

    def clear(self) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM files")

    def add_sources(self, roots: Iterable[str]) -> None:
        with self._lock, self._db:
            self._db.executemany("INSERT OR IGNORE INTO sources VALUES (?)", [(r,) for r in roots])

    def remove_source(self, root: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM sources WHERE root = ?", (root,))

    def sources(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT root FROM sources ORDER BY root")]

    def exclude(self, source: str) -> None:
        """Keep ``source`` out when its folder is indexed again (the user removed it)."""
        with self._lock, self._db:
            self._db.execute("INSERT OR IGNORE INTO excluded VALUES (?)", (source,))

    def include(self, sources: Iterable[str]) -> None:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM excluded WHERE source = ?", [(s,) for s in sources])

    def excluded(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT source FROM excluded")}

    def get_value(self, key: str, default: str = "") -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_value(self, key: str, value: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class KnowledgeBaseInfo:
    name: str
    collection: str
    embedder: str
    embedder_spec: str
    mode: str
    dimension: int
    chunk_tokens: int
    overlap_tokens: int
    created: float
    chunks: int = 0
    files: int = 0
    skipped: int = 0
    sources: list[str] = field(default_factory=list)
    watch: bool = False
    store: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class KnowledgeBase:
    """One knowledge base. Get it with ``create_kb``/``open_kb``; close() when done."""

    def __init__(self, name: str, store: Store, metadata: dict[str, Any], *,
                 ollama: OllamaSettings | None = None) -> None:
        """``ollama``: where an ``ollama:NAME`` embedder finds the server (the settings)."""
        self.name = name
        self.store = store
        self.ollama = ollama
        self.collection = collection_name(name)
        self.metadata = metadata
        folder = data_dir() / "knowledge" / self.collection
        self.catalogue = Catalogue(folder / "catalogue.sqlite3")
        self.keywords = KeywordIndex(folder / "keywords.sqlite3")

    # --- what the metadata says --------------------------------------------------------------

    @property
    def embedder_name(self) -> str:
        return str(self.metadata.get("corral_embedder", ""))

    @property
    def embedder_spec(self) -> str:
        return str(self.metadata.get("corral_embedder_spec", "minilm"))

    @property
    def mode(self) -> str:
        return str(self.metadata.get("corral_mode", "standard"))

    @property
    def dimension(self) -> int:
        return int(self.metadata.get("corral_dimension", 0))

    @property
    def params(self) -> ChunkParams:
        return ChunkParams(
            chunk_tokens=int(self.metadata.get("corral_chunk_tokens", 256)),
            overlap_tokens=int(self.metadata.get("corral_overlap_tokens", 32)),
        )

    @property
    def hybrid_weight(self) -> float:
        """How much the keyword side counts in hybrid search, 0..1 (0.5: as much as vectors)."""
        try:
            weight = float(self.metadata.get("corral_hybrid_weight", 0.5))
        except (TypeError, ValueError):
            return 0.5
        if weight != weight:  # NaN
            return 0.5
        return min(1.0, max(0.0, weight))

    @hybrid_weight.setter
    def hybrid_weight(self, weight: float) -> None:
        self.store.update_metadata(self.collection, {"corral_hybrid_weight": float(weight)})
        self.metadata["corral_hybrid_weight"] = float(weight)

    @property
    def watch(self) -> bool:
        return self.catalogue.get_value("watch") == "1"

    @watch.setter
    def watch(self, on: bool) -> None:
        self.catalogue.set_value("watch", "1" if on else "0")

    def embedder(self, notice: Notice | None = None) -> Embedder:
        """The embedder this knowledge base was built with (loaded once per process)."""
        emb = shared_embedder(self.embedder_spec, self.mode, notice=notice, ollama=self.ollama)
        self.check_embedder(emb)
        return emb

    def check_embedder(self, emb: Embedder) -> None:
        want = (self.embedder_name, self.mode, self.dimension)
        have = (emb.name, emb.mode, emb.dimension)
        if want != have:
            raise EmbedderMismatch(
                f"knowledge base '{self.name}' holds vectors of {want[0]} ({want[1]} mode, "
                f"{want[2]} dimensions); the chosen embedder is {have[0]} ({have[1]} mode, "
                f"{have[2]} dimensions), and vector spaces must not be mixed",
                hint=f"Re-index it with the new embedder (corral index --rebuild --kb '{self.name}').",
            )

    def info(self) -> KnowledgeBaseInfo:
        records = self.catalogue.all().values()
        return KnowledgeBaseInfo(
            name=self.name, collection=self.collection, embedder=self.embedder_name,
            embedder_spec=self.embedder_spec, mode=self.mode, dimension=self.dimension,
            chunk_tokens=self.params.chunk_tokens, overlap_tokens=self.params.overlap_tokens,
            created=float(self.metadata.get("corral_created", 0.0)),
            chunks=self.store.count(self.collection),
            files=sum(1 for r in records if r.status == "indexed"),
            skipped=sum(1 for r in records if r.status != "indexed"),
            sources=self.catalogue.sources(), watch=self.watch, store=self.store.where,
        )

    def rebuild(self, emb: Embedder | None = None, params: ChunkParams | None = None) -> None:
        """Drop every vector and record; the next index run starts over (new embedder ok)."""
        emb = emb or shared_embedder(self.embedder_spec, self.mode, ollama=self.ollama)
        params = params or self.params
        self.store.delete_collection(self.collection)
        kept = {k: v for k, v in self.metadata.items() if k == "corral_hybrid_weight"}
        self.metadata = {**_metadata(self.name, emb, params), **kept}
        self.store.create_collection(self.collection, self.metadata)
        self.catalogue.clear()
        for source in list(self.keywords_sources()):
            self.keywords.delete_source(source)

    def remove_file(self, source: str) -> int:
        """Remove one file's chunks and record; returns how many chunks it had.

        A file inside an indexed folder stays out of later runs (and watching) until it is
        dropped again by itself; a file that was dropped by itself stops being a source.
        """
        record = self.catalogue.get(source)
        self.store.delete(self.collection, where={"source": source})
        self.keywords.delete_source(source)
        self.catalogue.forget(source)
        roots = self.catalogue.sources()
        if source in roots:
            self.catalogue.remove_source(source)
            roots.remove(source)
        if any(source.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            self.catalogue.exclude(source)
        return record.chunks if record is not None else 0

    def iter_chunks(self, *, embeddings: bool = True, page_size: int = 2000
                    ) -> Iterator[tuple[list[str], list[str], list[dict[str, Any]], Any]]:
        """All chunks, a page at a time: (ids, texts, metadatas, embeddings or None)."""
        include = ("documents", "metadatas", "embeddings") if embeddings else ("documents", "metadatas")
        offset = 0
        while True:
            got = self.store.get(self.collection, limit=page_size, offset=offset, include=include)
            ids = list(got["ids"])
            if not ids:
                return
            embs = got.get("embeddings") if embeddings else None
            yield ids, list(got["documents"]), [dict(m or {}) for m in got["metadatas"]], embs
            offset += len(ids)

    def rebuild_keywords(self) -> int:
        """Refill the keyword index (a local cache) from the chunk texts Chroma holds."""
        count = self.keywords.sync((ids, texts, metas) for ids, texts, metas, _vectors
                                   in self.iter_chunks(embeddings=False))
        self.keywords.refresh()
        return count

    def keywords_sources(self) -> set[str]:
        with self.keywords._lock:
            return {r[0] for r in self.keywords._db.execute("SELECT DISTINCT source FROM chunks")}

    def close(self) -> None:
        self.catalogue.close()
        self.keywords.close()


def _metadata(name: str, emb: Embedder, params: ChunkParams) -> dict[str, Any]:
    return {
        KB_MARK: name,
        "corral_embedder": emb.name,
        "corral_embedder_spec": emb.spec,
        "corral_mode": emb.mode,
        "corral_dimension": int(emb.dimension),
        "corral_tokenizer": emb.tokenizer_name,
        "corral_max_tokens": int(emb.max_tokens),
        "corral_chunk_tokens": params.chunk_tokens,
        "corral_overlap_tokens": params.overlap_tokens,
        "corral_created": time.time(),
    }


def _store(store: Store | None, settings: Settings) -> Store:
    return store if store is not None else open_store(settings)


def create_kb(name: str, *, settings: Settings, embedder: str = "", mode: str = "",
              params: ChunkParams | None = None, store: Store | None = None,
              notice: Notice | None = None, exist_ok: bool = False) -> KnowledgeBase:
    """Create a knowledge base (its embedder defaults to the settings' embedder and mode).

    ``settings`` name the store (unless ``store`` is given), the default embedder and the
    Ollama server an ``ollama:NAME`` embedder uses.
    """
    name = check_name(name)
    st = _store(store, settings)
    col = collection_name(name)
    existing = dict(st.list_collections())
    if col in existing:
        if exist_ok:
            return KnowledgeBase(name, st, existing[col], ollama=settings.ollama)
        raise CorralError(f"a knowledge base called '{name}' already exists")
    emb = shared_embedder(embedder or settings.embedder.default, mode or settings.embedder.mode,
                          notice=notice, ollama=settings.ollama)
    meta = _metadata(name, emb, (params or ChunkParams()).validate())
    st.create_collection(col, meta)
    return KnowledgeBase(name, st, meta, ollama=settings.ollama)


def open_kb(name: str, *, settings: Settings, store: Store | None = None) -> KnowledgeBase:
    st = _store(store, settings)
    col = collection_name(name)
    for cname, meta in st.list_collections():
        if cname == col and meta.get(KB_MARK) == name:
            return KnowledgeBase(name, st, meta, ollama=settings.ollama)
    raise KnowledgeBaseNotFound(
        f"no knowledge base called '{name}'", hint="Create it with: corral kb create NAME."
    )


def list_kbs(*, settings: Settings, store: Store | None = None) -> list[KnowledgeBaseInfo]:
    st = _store(store, settings)
    out = []
    for cname, meta in st.list_collections():
        if KB_MARK in meta and collection_name(str(meta[KB_MARK])) == cname:
            kb = KnowledgeBase(str(meta[KB_MARK]), st, meta, ollama=settings.ollama)
            try:
                out.append(kb.info())
            finally:
                kb.close()
    return sorted(out, key=lambda i: i.name.lower())


def remove_kb(name: str, *, settings: Settings, store: Store | None = None) -> None:
    kb = open_kb(name, settings=settings, store=store)
    kb.close()
    kb.store.delete_collection(kb.collection)
    shutil.rmtree(data_dir() / "knowledge" / kb.collection, ignore_errors=True)
