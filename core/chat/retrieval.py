"""Adapter from a knowledge base name to the chat turn runner's ``retrieval`` callable
(query -> hits with text, source, page, chunk_index, score). The documents area owns the
retriever; this only wires it, with the chat settings' number of hits and score threshold."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.config import Settings


class KbRetrieval:
    """Callable: the best ``k`` chunks of one knowledge base for a query. close() when done."""

    def __init__(self, kb: Any, *, k: int = 4, threshold: float = 0.0) -> None:
        from core.rag.retriever import Retriever

        self.kb = kb
        self.name = str(kb.name)
        self.k = k
        self.threshold = threshold
        try:
            self.retriever = Retriever(kb)  # loads the embedder, checks it matches
        except BaseException:
            kb.close()
            raise

    def __call__(self, query: str) -> Sequence[Any]:
        return self.retriever.search(query, self.k, threshold=self.threshold)

    def close(self) -> None:
        self.kb.close()


def open_retrieval(kb: str, settings: Settings, *, k: int | None = None,
                   threshold: float | None = None) -> KbRetrieval:
    """Open the knowledge base now (clear errors early: not found, embedder mismatch ...).
    ``k`` defaults to the knowledge base's tuned number of passages, else the chat setting
    (documents_k); ``threshold`` to the chat setting (documents_threshold)."""
    from core.rag.knowledge_base import open_kb

    chat = settings.chat
    opened = open_kb(kb, settings=settings)
    return KbRetrieval(opened, k=k if k is not None else (opened.top_k or int(chat.documents_k)),
                       threshold=(threshold if threshold is not None
                                  else float(chat.documents_threshold)))
