"""Knowledge bases: a Chroma collection (the truth) plus local caches (files, keywords).

The collection's metadata records the embedder (name, spec, mode, dimension) and the chunk
parameters; opening a knowledge base with another embedder raises EmbedderMismatch rather
than mixing vector spaces. Its chunks' metadata says which file versions it holds. The local
folder (``<data>/knowledge/<collection>/``) caches that as a catalogue and a keyword index,
checked against Chroma and repaired from it whenever the knowledge base opens, and keeps what
is this machine's own: the folders it indexes and watches.

A rebuild builds a new collection (generation ``n + 1``, state "building") beside the live one
and swaps on success: it is marked live, then the old one is deleted. Whatever point a kill
hits, the newest live generation is whole.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core import failpoints
from core.config import OllamaSettings, Settings, data_dir
from core.errors import CorralError, EmbedderMismatch, KnowledgeBaseNotFound
from core.rag.catalogue import Catalogue, FileHead, Repair, repair
from core.rag.chunker import ChunkParams
from core.rag.embedder import Embedder, Notice, shared_embedder
from core.rag.keyword import KeywordIndex
from core.rag.store import Store, open_store

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,62}$")
KB_MARK = "corral_kb"
GENERATION = "corral_generation"  # 0 for the first collection of a knowledge base
STATE = "corral_state"  # "live" (or absent), or "building" during a rebuild
#: how the knowledge base is searched: kept by a rebuild (another embedder or chunking)
SEARCH_KEYS = ("corral_hybrid_weight", "corral_top_k")
MAX_TOP_K = 50


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
    hybrid_weight: float = 0.5  #: how much keywords count in hybrid search (0..1)
    top_k: int | None = None  #: passages chat retrieves per turn (None: the chat setting)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class KnowledgeBase:
    """One knowledge base. Get it with ``create_kb``/``open_kb``; close() when done."""

    def __init__(self, name: str, store: Store, metadata: dict[str, Any], *,
                 collection: str = "", ollama: OllamaSettings | None = None) -> None:
        """``ollama``: where an ``ollama:NAME`` embedder finds the server (the settings)."""
        self.name = name
        self.store = store
        self.ollama = ollama
        self.collection = collection or collection_name(name)
        self.metadata = metadata
        self.folder = _folder(self.collection)
        self.catalogue = Catalogue(self.folder / "catalogue.sqlite3")
        self.keywords = KeywordIndex(self.folder / "keywords.sqlite3")
        #: files whose chunks lack what this version of Corral records (start, end, ...)
        self.stale_metadata: set[str] = set()
        self.replaces = ""  # while building: the live collection this one will replace
        #: sources with chunks in Chroma when the caches were checked (None: not known);
        #: a file outside it has no older version to drop
        self.stored_sources: set[str] | None = None

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
        if not 0.0 <= float(weight) <= 1.0:  # NaN included
            raise CorralError(f"the hybrid weight must be between 0 and 1, not {weight}",
                              hint="0 searches by meaning only, 1 by keywords only.")
        self.store.update_metadata(self.collection, {"corral_hybrid_weight": float(weight)})
        self.metadata["corral_hybrid_weight"] = float(weight)

    @property
    def top_k(self) -> int | None:
        """How many passages chat retrieves from this knowledge base per turn (tuned), or
        None: the chat setting ``documents_k`` decides."""
        try:
            k = int(self.metadata.get("corral_top_k", 0))
        except (TypeError, ValueError):
            return None
        return k if k > 0 else None

    @top_k.setter
    def top_k(self, k: int | None) -> None:
        if k is not None and not 1 <= int(k) <= MAX_TOP_K:
            raise CorralError(f"the number of passages must be between 1 and {MAX_TOP_K}, "
                              f"not {k}")
        value = int(k or 0)  # 0: the chat setting decides
        self.store.update_metadata(self.collection, {"corral_top_k": value})
        self.metadata["corral_top_k"] = value

    @property
    def watch(self) -> bool:
        return self.catalogue.get_value("watch") == "1"

    @watch.setter
    def watch(self, on: bool) -> None:
        self.catalogue.set_value("watch", "1" if on else "0")

    @property
    def calibration(self) -> str:
        """The calibration of a 'fastest' (int8) embedder: recorded, or from its name."""
        recorded = str(self.metadata.get("corral_calibration", ""))
        found = re.search(r" int8-([0-9a-f]{8})$", self.embedder_name)
        return recorded or (found.group(1) if found else "")

    def embedder(self, notice: Notice | None = None) -> Embedder:
        """The embedder this knowledge base was built with (loaded once per process)."""
        emb = shared_embedder(self.embedder_spec, self.mode, notice=notice, ollama=self.ollama,
                              calibration=self.calibration)
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
            hybrid_weight=self.hybrid_weight, top_k=self.top_k,
        )

    # --- rebuild: a new generation beside the live one, swapped on success -------------------

    @property
    def building(self) -> bool:
        return self.metadata.get(STATE) == "building"

    @property
    def generation(self) -> int:
        return _generation(self.metadata)

    def start_rebuild(self, emb: Embedder | None = None, params: ChunkParams | None = None
                      ) -> KnowledgeBase:
        """A new, empty generation of this knowledge base (another embedder or chunking is
        fine), not yet live: index into it, then ``go_live()``, or ``abandon()`` it. The caller
        holds the index lease, so a leftover of an earlier rebuild can be cleared."""
        emb = emb or self.embedder()
        params = (params or self.params).validate()
        others = _collections_of(self.store, self.name)
        for cname, meta in others:
            if meta.get(STATE) == "building":  # a rebuild that was cancelled or killed
                self.store.delete_collection(cname)
                shutil.rmtree(_folder(cname), ignore_errors=True)
        generation = max(_generation(m) for _c, m in others) + 1
        cname = f"{collection_name(self.name)}-g{generation}"
        kept = {k: v for k, v in self.metadata.items() if k in SEARCH_KEYS}
        meta = {**_metadata(self.name, emb, params), **kept, GENERATION: generation,
                STATE: "building"}
        shutil.rmtree(_folder(cname), ignore_errors=True)
        self.store.create_collection(cname, meta)
        new = KnowledgeBase(self.name, self.store, meta, collection=cname, ollama=self.ollama)
        new.stored_sources = set()
        new.catalogue.carry_from(self.catalogue)
        new.replaces = self.collection
        return new

    def go_live(self) -> None:
        """Make this generation the knowledge base, then delete the older ones."""
        self.store.update_metadata(self.collection, {STATE: "live"})
        self.metadata[STATE] = "live"
        failpoints.reached("rebuild.live")
        for cname, _meta in _collections_of(self.store, self.name):
            if cname != self.collection:
                self.store.delete_collection(cname)
                shutil.rmtree(_folder(cname), ignore_errors=True)
        self.replaces = ""

    def abandon(self) -> None:
        """Drop a generation that never went live (a cancelled or failed rebuild)."""
        if not self.building:
            raise CorralError("only a rebuild that is not live yet can be abandoned")
        self.close()
        self.store.delete_collection(self.collection)
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- the caches, checked against Chroma -------------------------------------------------

    def heads(self) -> list[FileHead]:
        """Every stored file version, from its first chunk."""
        got = self.store.get(self.collection, where={"chunk_index": 0}, include=("metadatas",))
        return [FileHead.from_metadata(m or {}) for m in got["metadatas"]]

    def chunk_counts(self) -> dict[tuple[str, str], int]:
        """Chunks per (source, file hash): a full pass over the metadata."""
        counts: dict[tuple[str, str], int] = {}
        for _ids, _texts, metas, _vectors in self.iter_chunks(embeddings=False, texts=False):
            for m in metas:
                key = (str(m.get("source", "")), str(m.get("file_hash", "")))
                counts[key] = counts.get(key, 0) + 1
        return counts

    def reconcile(self) -> Repair:
        """Check the catalogue and the keyword index against Chroma and repair them.

        Cheap when they agree: the file heads and one count. A file with no vectors is never
        "unchanged"; a file that is whole in Chroma is listed even if this machine never
        indexed it (a shared server)."""
        heads = self.heads()
        total = self.store.count(self.collection)
        fixed = repair(self.catalogue, heads)
        indexed = sum(r.chunks for r in self.catalogue.all().values() if r.status == "indexed")
        if indexed != total:
            more = repair(self.catalogue, heads, self.chunk_counts())
            fixed.dropped += more.dropped
            fixed.restored += more.restored
        self.stale_metadata = {h.source for h in heads if h.chunks is None}
        self.stored_sources = {h.source for h in heads}
        if self.keywords.count() != total:
            self.sync_keywords()
        return fixed

    def sync_keywords(self) -> int:
        """Bring the keyword cache to the chunks Chroma holds, fetching only missing texts."""
        have = self.keywords.ids()
        stored: set[str] = set()
        for ids, _texts, _metas, _vectors in self.iter_chunks(embeddings=False, texts=False,
                                                              metadatas=False):
            stored.update(ids)
        self.keywords.delete_ids(have - stored)
        missing = sorted(stored - have)
        page = 1000
        for start in range(0, len(missing), page):
            got = self.store.get(self.collection, ids=missing[start : start + page])
            self.keywords.upsert(
                list(got["ids"]), [str((m or {}).get("source", "")) for m in got["metadatas"]],
                [str((m or {}).get("file_hash", "")) for m in got["metadatas"]],
                list(got["documents"]))
        self.keywords.refresh()
        return len(stored)

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

    def iter_chunks(self, *, embeddings: bool = True, texts: bool = True,
                    metadatas: bool = True, page_size: int = 2000
                    ) -> Iterator[tuple[list[str], list[str], list[dict[str, Any]], Any]]:
        """All chunks, a page at a time: (ids, texts, metadatas, embeddings or None); what is
        not asked for comes back empty."""
        include = [name for name, wanted in (("documents", texts), ("metadatas", metadatas),
                                             ("embeddings", embeddings)) if wanted]
        offset = 0
        while True:
            got = self.store.get(self.collection, limit=page_size, offset=offset, include=include)
            ids = list(got["ids"])
            if not ids:
                return
            embs = got.get("embeddings") if embeddings else None
            docs = list(got["documents"]) if texts else []
            metas = [dict(m or {}) for m in got["metadatas"]] if metadatas else []
            yield ids, docs, metas, embs
            offset += len(ids)

    def calibration_passages(self, most: int = 64) -> list[str]:
        """Chunk texts spread evenly over the knowledge base: what a 'fastest' embedder is
        calibrated on when the user picks this knowledge base (works on a shared server)."""
        total = self.store.count(self.collection)
        step = max(1, total // most)
        out: list[str] = []
        for offset in range(0, total, step):
            got = self.store.get(self.collection, limit=1, offset=offset, include=("documents",))
            out.extend(str(t) for t in got["documents"] if t)
            if len(out) >= most:
                break
        return out

    def rebuild_keywords(self) -> int:
        """Refill the keyword index (a local cache) from the chunk texts Chroma holds."""
        self.keywords.delete_ids(self.keywords.ids())
        return self.sync_keywords()

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
        "corral_calibration": str((getattr(emb, "calibration", None) or {}).get("id", "")),
        "corral_chunk_tokens": params.chunk_tokens,
        "corral_overlap_tokens": params.overlap_tokens,
        "corral_created": time.time(),
    }


def _folder(collection: str) -> Path:
    return data_dir() / "knowledge" / collection


def _generation(meta: dict[str, Any]) -> int:
    try:
        return int(meta.get(GENERATION, 0))
    except (TypeError, ValueError):
        return 0


def _collections_of(store: Store, name: str,
                    listing: list[tuple[str, dict[str, Any]]] | None = None
                    ) -> list[tuple[str, dict[str, Any]]]:
    """Every collection (every generation) of the knowledge base ``name``."""
    base = collection_name(name)
    return [(c, m) for c, m in (listing if listing is not None else store.list_collections())
            if m.get(KB_MARK) == name and (c == base or c.startswith(base + "-g"))]


def _live(collections: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]] | None:
    live = [(c, m) for c, m in collections if m.get(STATE) != "building"]
    return max(live, key=lambda cm: _generation(cm[1])) if live else None


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
    live = _live(_collections_of(st, name))
    if live is not None:
        if exist_ok:
            return _opened(name, st, live, settings)
        raise CorralError(f"a knowledge base called '{name}' already exists")
    emb = shared_embedder(embedder or settings.embedder.default, mode or settings.embedder.mode,
                          notice=notice, ollama=settings.ollama)
    meta = _metadata(name, emb, (params or ChunkParams()).validate())
    col = collection_name(name)
    shutil.rmtree(_folder(col), ignore_errors=True)  # the caches of an earlier namesake
    st.create_collection(col, meta)
    kb = KnowledgeBase(name, st, meta, ollama=settings.ollama)
    kb.stored_sources = set()  # a new collection holds nothing
    return kb


def _opened(name: str, store: Store, live: tuple[str, dict[str, Any]],
            settings: Settings) -> KnowledgeBase:
    """The live generation, its caches checked against Chroma."""
    kb = KnowledgeBase(name, store, live[1], collection=live[0], ollama=settings.ollama)
    try:
        kb.reconcile()
    except BaseException:
        kb.close()
        raise
    return kb


def open_kb(name: str, *, settings: Settings, store: Store | None = None) -> KnowledgeBase:
    st = _store(store, settings)
    collections = _collections_of(st, name)
    live = _live(collections)
    if live is None:
        raise KnowledgeBaseNotFound(
            f"no knowledge base called '{name}'", hint="Create it with: corral kb create NAME.")
    for cname, meta in collections:  # a swap that a kill cut short: the newest live one won
        if meta.get(STATE) != "building" and _generation(meta) < _generation(live[1]):
            st.delete_collection(cname)
            shutil.rmtree(_folder(cname), ignore_errors=True)
    return _opened(name, st, live, settings)


def list_kbs(*, settings: Settings, store: Store | None = None) -> list[KnowledgeBaseInfo]:
    st = _store(store, settings)
    listing = st.list_collections()
    names = {str(m[KB_MARK]) for _c, m in listing if KB_MARK in m}
    out = []
    for name in names:
        live = _live(_collections_of(st, name, listing))
        if live is None:
            continue
        kb = _opened(name, st, live, settings)
        try:
            out.append(kb.info())
        finally:
            kb.close()
    return sorted(out, key=lambda i: i.name.lower())


def remove_kb(name: str, *, settings: Settings, store: Store | None = None) -> None:
    st = _store(store, settings)
    collections = _collections_of(st, name)
    if _live(collections) is None:
        raise KnowledgeBaseNotFound(f"no knowledge base called '{name}'")
    for cname, _meta in collections:
        st.delete_collection(cname)
        shutil.rmtree(_folder(cname), ignore_errors=True)
