"""A knowledge base's chunk embeddings, texts and documents, read in pages for the corpus map."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import Settings
from core.errors import Cancelled, CorralError

if TYPE_CHECKING:
    from core.rag.store import Store

Progress = Callable[[float, str], None]


@dataclass
class Corpus:
    """Row i of ``vectors`` is chunk i: its id, text and the document it comes from."""

    vectors: np.ndarray  # (n, dim) float32
    texts: list[str]
    documents: list[str]  # source path of each chunk
    ids: list[str] = field(default_factory=list)
    metadatas: list[dict[str, Any]] = field(default_factory=list)
    name: str = ""
    embedder_spec: str = "minilm"
    embedder_mode: str = "standard"

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def document_index(self, max_colours: int = 12) -> tuple[np.ndarray, list[str]]:
        """(document number per chunk, legend names): the biggest documents get their own
        number, the rest share the last one ('other documents')."""
        counts: dict[str, int] = {}
        for d in self.documents:
            counts[d] = counts.get(d, 0) + 1
        ranked = sorted(counts, key=lambda d: (-counts[d], d))
        own = ranked if len(ranked) <= max_colours else ranked[: max_colours - 1]
        number = {d: i for i, d in enumerate(own)}
        other = len(own)
        idx = np.array([number.get(d, other) for d in self.documents], dtype=np.int32)
        legend = [Path(d).name or d for d in own]
        if len(ranked) > len(own):
            legend.append(f"{len(ranked) - len(own)} other documents")
        return idx, legend

    def describe(self, i: int) -> str:
        meta = self.metadatas[i] if i < len(self.metadatas) else {}
        where = Path(self.documents[i]).name
        if meta.get("page") not in (None, ""):
            where += f", page {meta['page']}"
        if meta.get("chunk_index") not in (None, ""):
            where += f", chunk {meta['chunk_index']}"
        return where


def corpus_from_vectors(
    vectors: np.ndarray | Sequence[Sequence[float]],
    texts: Sequence[str],
    documents: Sequence[str],
    name: str = "",
) -> Corpus:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != len(texts) or len(texts) != len(documents):
        raise CorralError("Vectors, texts and documents must have the same length")
    return Corpus(arr, list(texts), list(documents), name=name)


def load_corpus(
    kb_name: str,
    *,
    settings: Settings,
    store: Store | None = None,
    page_size: int = 5000,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Corpus:
    """Read every chunk of a knowledge base with its embedding (page by page, cancellable)."""
    from core.rag.knowledge_base import open_kb

    kb = open_kb(kb_name, settings=settings, store=store)
    try:
        total = kb.store.count(kb.collection)
        vectors: list[np.ndarray] = []
        texts: list[str] = []
        docs: list[str] = []
        ids: list[str] = []
        metas: list[dict[str, Any]] = []
        offset = 0
        while offset < total:
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled")
            page = kb.store.get(
                kb.collection, limit=page_size, offset=offset,
                include=("embeddings", "documents", "metadatas"),
            )
            got = list(page.get("ids") or [])
            if not got:
                break
            emb = page.get("embeddings")
            vectors.append(np.asarray(emb, dtype=np.float32).reshape(len(got), -1))
            texts.extend(str(t or "") for t in (page.get("documents") or [""] * len(got)))
            page_metas = [dict(m or {}) for m in (page.get("metadatas") or [{}] * len(got))]
            metas.extend(page_metas)
            docs.extend(str(m.get("source", "?")) for m in page_metas)
            ids.extend(got)
            offset += len(got)
            if progress is not None:
                progress(min(1.0, offset / max(1, total)), f"Read {offset:,} of {total:,} chunks")
        dim = kb.dimension or (vectors[0].shape[1] if vectors else 0)
        matrix = np.vstack(vectors) if vectors else np.zeros((0, dim), dtype=np.float32)
        return Corpus(matrix, texts, docs, ids, metas, kb_name, kb.embedder_spec, kb.mode)
    finally:
        kb.close()


def knowledge_base_names(settings: Settings) -> list[str]:
    from core.rag.knowledge_base import list_kbs

    return [info.name for info in list_kbs(settings=settings)]
