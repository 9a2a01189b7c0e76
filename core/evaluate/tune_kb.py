"""Auto-tune a knowledge base: its documents read again from disk, the search run, the result
stored with it, and (on request) the winner applied: the hybrid weight set, and where the
chunking or embedder changes, a re-index into a new generation that goes live on success."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import Cancelled, CorralError
from core.evaluate.contestants import Progress, load_embedder
from core.evaluate.dataset import SEED
from core.evaluate.results import TUNE_KEY
from core.evaluate.tune import BUDGET_S, N_QUERIES, Config, Document, TuneResult, grid, tune
from core.rag.chunker import ChunkParams
from core.rag.embedder import Embedder
from core.rag.knowledge_base import KnowledgeBase

if TYPE_CHECKING:
    from core.config import Settings

MAX_DOCUMENTS = 100


def _quiet(_fraction: float, _text: str) -> None:
    return None


def own_embedder(kb: KnowledgeBase) -> str:
    """The knowledge base's embedder by the name ``--embedders`` takes."""
    return kb.embedder_spec + ("" if kb.mode == "standard" else f":{kb.mode}")


def current_config(kb: KnowledgeBase) -> Config:
    p = kb.params
    return Config(own_embedder(kb), p.chunk_tokens, p.overlap_tokens, kb.hybrid_weight)


def documents_of(kb: KnowledgeBase, *, max_documents: int = MAX_DOCUMENTS, seed: int = SEED,
                 progress: Progress = _quiet) -> tuple[list[Document], list[str]]:
    """The knowledge base's indexed files, read again (a seeded sample of at most
    ``max_documents``), and notes on those that could not be read."""
    from core.rag.loaders import load_document

    sources = sorted(s for s, r in kb.catalogue.all().items() if r.status == "indexed")
    notes: list[str] = []
    if len(sources) > max_documents:
        notes.append(f"tuned on {max_documents} of {len(sources)} documents")
        sources = sorted(random.Random(seed).sample(sources, max_documents))
    docs: list[Document] = []
    for n, source in enumerate(sources):
        progress(0.0, f"reading document {n + 1} of {len(sources)}")
        try:
            loaded = load_document(Path(source))
        except (CorralError, OSError) as exc:
            notes.append(f"{Path(source).name} was left out: {exc}")
            continue
        if loaded.text.strip():
            docs.append(Document(source, loaded.units))
    return docs, notes


def _loader(name: str, kb: KnowledgeBase) -> Callable[[], Embedder]:
    return lambda: load_embedder(name, ollama=kb.ollama)


def tune_kb(kb: KnowledgeBase, names: Sequence[str] = (), *, budget_s: float = BUDGET_S,
            configs: Sequence[Config] | None = None, seed: int = SEED,
            n_queries: int = N_QUERIES, progress: Progress = _quiet,
            store: bool = True) -> TuneResult:
    """Search chunk size x overlap x embedder (the knowledge base's, and ``names``) x hybrid
    weight for ``kb``; the knowledge base itself is not changed (see ``apply_best``)."""
    current = current_config(kb)
    embedders = list(dict.fromkeys([current.embedder, *[n.strip() for n in names if n.strip()]]))
    searched = list(configs or grid(embedders))
    loaders = {c.embedder: _loader(c.embedder, kb) for c in [current, *searched]}
    docs, notes = documents_of(kb, seed=seed, progress=progress)
    result = tune(docs, loaders, current, configs=searched, kb=kb.name,
                  seed=seed, n_queries=n_queries, budget_s=budget_s, progress=progress)
    result.notes[:0] = notes
    if store:
        save_tune(kb, result)
    return result


def apply_best(kb: KnowledgeBase, result: TuneResult, *, progress: Progress = _quiet) -> str:
    """Make the winner the knowledge base's configuration; returns what changed. A new
    chunking or embedder re-indexes into a new generation, swapped in only on success."""
    from core.rag.indexing import IndexJob

    best, now = result.best.config, current_config(kb)
    done = []
    if best.hybrid_weight != now.hybrid_weight:
        kb.hybrid_weight = best.hybrid_weight  # (a rebuild keeps it)
        done.append(f"hybrid weight {best.hybrid_weight:g}")
    if result.top_k and kb.top_k != result.top_k:
        kb.top_k = result.top_k  # chat's passages per turn from this knowledge base
        done.append(f"{result.top_k} passages per chat turn")
    if (best.embedder, best.chunk_tokens, best.overlap_tokens) != (
            now.embedder, now.chunk_tokens, now.overlap_tokens):
        emb = load_embedder(best.embedder, ollama=kb.ollama)
        params = ChunkParams(best.chunk_tokens, best.overlap_tokens).validate()
        job = IndexJob(kb, kb.catalogue.sources(), embedder=emb, rebuild=True, params=params)
        stopped = False
        for ev in job:  # a cancelled rebuild is abandoned; the old generation stays live
            stopped = stopped or ev.kind == "cancelled"
            if not stopped:
                try:
                    progress(ev.fraction, f"re-indexing: {ev.files_done} of {ev.files_total} files")
                except Cancelled:
                    stopped = True
                    job.cancel()
        if stopped:
            already = f" ({'; '.join(done)}: set before it)" if done else ""
            raise Cancelled("the re-index was cancelled; the knowledge base keeps its chunking "
                            f"and embedder{already}", partial="; ".join(done))
        done.append(f"re-indexed with {best.embedder}, {best.chunk_tokens}-token chunks, "
                    f"overlap {best.overlap_tokens}")
    return "; ".join(done) or "nothing: the current configuration is already the best"


def remember_applied(name: str, settings: Settings, result: TuneResult, said: str
                     ) -> TuneResult:
    """Store a copy of ``result`` marked applied (``said``: what changed) with the knowledge
    base as it is now (a re-index made a new generation, so it is opened again)."""
    from core.rag.knowledge_base import open_kb

    applied = dataclasses.replace(result, applied=said)
    kb = open_kb(name, settings=settings)
    try:
        save_tune(kb, applied)
    finally:
        kb.close()
    return applied


def save_tune(kb: KnowledgeBase, result: TuneResult) -> None:
    kb.catalogue.set_value(TUNE_KEY, json.dumps(result.to_dict()))


def load_tune(kb: KnowledgeBase) -> TuneResult | None:
    text = kb.catalogue.get_value(TUNE_KEY)
    if not text:
        return None
    try:
        return TuneResult.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError):
        return None
