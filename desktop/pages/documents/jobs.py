"""The Documents page's background jobs: core calls run in the thread pool, no widgets here.

Each function takes the worker's ``job`` first (progress, partial, cancel) and returns plain
data; the page turns it into widgets on the GUI thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from desktop.jobs import Job

if TYPE_CHECKING:  # core's heavy modules load in the workers, when first needed
    from core.config import Settings
    from core.rag.catalogue import FileRecord
    from core.rag.chunker import ChunkParams
    from core.rag.embedder import Embedder
    from core.rag.knowledge_base import KnowledgeBase, KnowledgeBaseInfo
    from core.rag.retriever import Hit

#: (embedder spec, speed mode, chunk params or None: keep the knowledge base's)
Rebuild = tuple[str, str, "ChunkParams | None"]

STANDARD_NOTE = "The knowledge base uses the standard embedder instead."
REBUILD_HINT = ("Choose “Re-index with another embedder…” to rebuild it with an embedder "
                "that works here.")


def list_job(job: Job, settings: Settings) -> list[KnowledgeBaseInfo]:
    from core.rag.knowledge_base import list_kbs

    return list_kbs(settings=settings)


def files_job(job: Job, settings: Settings, name: str) -> tuple[str, list[FileRecord]]:
    """The knowledge base's catalogue: one record per file (indexed or skipped, with why)."""
    from core.rag.knowledge_base import open_kb

    kb = open_kb(name, settings=settings)
    try:
        return name, sorted(kb.catalogue.all().values(), key=lambda r: r.source.lower())
    finally:
        kb.close()


def remove_kb_job(job: Job, settings: Settings, name: str) -> str:
    from core.rag.knowledge_base import remove_kb

    remove_kb(name, settings=settings)
    return name


def remove_files_job(job: Job, settings: Settings, name: str,
                     sources: list[str]) -> tuple[int, int]:
    """Remove files' chunks from a knowledge base: (files, chunks) removed."""
    from core.rag.knowledge_base import open_kb

    kb = open_kb(name, settings=settings)
    try:
        chunks = sum(kb.remove_file(source) for source in sources)
        return len(sources), chunks
    finally:
        kb.close()


def set_watch_job(job: Job, settings: Settings, name: str, value: bool) -> None:
    from core.rag.knowledge_base import open_kb

    kb = open_kb(name, settings=settings)
    try:
        kb.watch = value
    finally:
        kb.close()


_weight_writes = threading.Lock()


def set_weight_job(job: Job, settings: Settings, name: str, weight: float) -> tuple[str, float]:
    """Keep ``weight`` as the knowledge base's keyword weight (in its Chroma metadata)."""
    from core.rag.knowledge_base import open_kb

    with _weight_writes:  # one at a time: the page's last word is the one kept
        kb = open_kb(name, settings=settings)
        try:
            kb.hybrid_weight = weight
            return name, kb.hybrid_weight
        finally:
            kb.close()


def search_job(job: Job, settings: Settings, name: str, query: str,
               k: int) -> tuple[str, list[Hit]]:
    """What chat would retrieve for ``query``: the top ``k`` hits (source, page, score)."""
    from core.rag.knowledge_base import open_kb
    from core.rag.retriever import Retriever

    kb = open_kb(name, settings=settings)
    try:
        job.progress(None, "Loading the embedding model…")
        retriever = Retriever(kb)
        job.check()
        job.progress(None, "Searching…")
        return query, retriever.search(query, k)
    finally:
        kb.close()


def prepare_embedder(job: Job, spec: str, mode: str, paths: Sequence[str]) -> str:
    """Export the fast/fastest model once (calibrated on ``paths`` for 'fastest').

    Returns '' when the mode is ready, else the sentence that says why it cannot be used
    (the caller then uses the standard embedder). Cancelling raises Cancelled.
    """
    from core.errors import Cancelled, CorralError
    from core.rag.fast_embedder import (
        calibration_sample,
        fast_embedder_ready,
        prepare_fast_embedder,
    )

    if mode == "standard" or fast_embedder_ready(mode, spec):
        return ""

    def progress(fraction: float | None, text: str = "") -> None:
        job.check()  # raising Cancelled here stops the export child cleanly
        job.progress(fraction, f"Preparing the {mode} embedder for this CPU (one time): {text}")

    try:
        sample = None
        if mode == "fastest" and paths:
            job.progress(None, "Reading passages of your documents to calibrate the model…")
            sample = calibration_sample(paths) or None
        job.check()
        prepare_fast_embedder(mode, spec, calibration=sample, progress=progress)
    except Cancelled:
        raise
    except CorralError as exc:
        return f"The {mode} mode is unavailable: {exc.sentence()}"
    return ""


def create_job(job: Job, settings: Settings, name: str, spec: str, mode: str,
               params: ChunkParams | None, exist_ok: bool = False,
               paths: Sequence[str] = ()) -> dict[str, Any]:
    """Create a knowledge base; for fast/fastest the model is exported first, with progress."""
    from core.errors import CorralError, KnowledgeBaseNotFound
    from core.rag.knowledge_base import check_name, create_kb, open_kb

    name = check_name(name)
    try:
        open_kb(name, settings=settings).close()
        if not exist_ok:
            raise CorralError(f"a knowledge base called '{name}' already exists",
                              hint="Choose another name.")
        return {"name": name, "notes": [], "existed": True}
    except KnowledgeBaseNotFound:
        pass
    notes: list[str] = []
    problem = prepare_embedder(job, spec, mode, paths)
    if problem:
        notes.append(f"{problem} {STANDARD_NOTE}")
        mode = "standard"
    job.check()
    job.progress(None, "Loading the embedding model…")
    kb = create_kb(name, embedder=spec, mode=mode, params=params, settings=settings,
                   notice=lambda text: notes.append(_sentence(text)))
    kb.close()
    return {"name": name, "notes": notes, "existed": False}


def index_job(job: Job, settings: Settings, name: str, paths: list[str] | None,
              only_if_changed: bool = False, rebuild: Rebuild | None = None) -> dict[str, Any]:
    """Index ``paths`` (None: the knowledge base's own sources) and report every event.

    ``rebuild`` = (embedder spec, mode, chunk params or None): index the sources again with
    that embedder into a new collection, which replaces the old one only when the run ends
    well (a cancel keeps the old one); vectors of two embedders never mix.
    """
    from core.rag.embedder import shared_embedder
    from core.rag.indexing import IndexJob, has_changes
    from core.rag.knowledge_base import open_kb

    job.progress(None, "Opening the knowledge base…")
    kb = open_kb(name, settings=settings)
    summary: dict[str, Any] = {"kb": name, "indexed": 0, "unchanged": 0, "skipped": 0,
                               "removed": 0, "chunks": 0, "cancelled": False, "health": True,
                               "paths": list(paths or []), "notes": [], "rebuilt": False}
    try:
        roots = paths if paths is not None else kb.catalogue.sources()
        if rebuild is not None:
            spec, mode, params = rebuild
            problem = prepare_embedder(job, spec, mode, roots)
            if problem:
                summary["notes"].append(f"{problem} {STANDARD_NOTE}")
                mode = "standard"
            job.progress(None, "Loading the embedding model…")
            emb = shared_embedder(spec, mode, ollama=settings.ollama,
                                  notice=lambda t: summary["notes"].append(_sentence(t)))
            summary["rebuilt"] = True
        elif not roots or (only_if_changed and not has_changes(kb, roots)):
            return summary
        else:
            emb = _kb_embedder(job, kb, roots, summary["notes"])
        job.check()
        # a rebuild indexes into a new generation and swaps it in when the run ends well
        index = IndexJob(kb, roots, embedder=emb, stop_when=lambda: job.cancelled,
                         rebuild=rebuild is not None, params=rebuild[2] if rebuild else None)
        for ev in index:
            if ev.kind == "file":
                summary[ev.status] = summary.get(ev.status, 0) + 1
            elif ev.kind == "health":
                summary["health"] = ev.ok
                summary["health_reason"] = ev.reason
            elif ev.kind == "cancelled":
                summary["cancelled"] = True
            summary["chunks"] = ev.chunks
            job.partial(ev)
        return summary
    finally:
        kb.close()


def _kb_embedder(job: Job, kb: KnowledgeBase, roots: Sequence[str],
                 notes: list[str]) -> Embedder:
    """The knowledge base's own embedder (a fast mode's export made first, with progress);
    when it cannot be had, the error says how to switch embedders on this page."""
    from core.errors import EmbedderMismatch, FeatureUnavailable

    problem = prepare_embedder(job, kb.embedder_spec, kb.mode, roots)
    if problem:
        raise FeatureUnavailable(problem, hint=REBUILD_HINT)
    job.progress(None, "Loading the embedding model…")
    try:
        return kb.embedder(notice=lambda t: notes.append(_sentence(t)))
    except EmbedderMismatch as exc:
        raise EmbedderMismatch(exc.message, hint=REBUILD_HINT) from exc


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "." if text else ""
