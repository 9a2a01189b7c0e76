"""Adapter from a knowledge base name to the chat turn runner's ``retrieval`` callable
(query -> hits with text, source, page, chunk_index, score). The documents area owns the
retriever; this only wires it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.chat.hooks import Retrieval


def open_retrieval(kb: str, settings: Any = None, *, k: int = 4) -> Retrieval:
    """Open the knowledge base now (clear errors early: not found, embedder mismatch ...)."""
    from core.rag.knowledge_base import open_kb
    from core.rag.retriever import Retriever

    retriever = Retriever(open_kb(kb, settings=settings))

    def retrieve(query: str) -> Sequence[Any]:
        return retriever.search(query, k)

    return retrieve
