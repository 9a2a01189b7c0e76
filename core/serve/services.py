"""The API's other endpoints as plain functions over core: the model list, embeddings,
moderation by the guard, and knowledge-base search. Each is blocking: the app runs them in
worker threads."""

from __future__ import annotations

import base64
import threading
from typing import Any

import numpy as np

from core.config import Settings
from core.errors import CorralError, FeatureUnavailable
from core.serve.fair import FairQueues
from core.serve.moderation import moderation_result
from core.serve.shapes import ApiError, EmbeddingRequest, ModerationRequest, SearchRequest

EMBEDDER_REF = "minilm"


def list_models(settings: Settings) -> list[dict[str, Any]]:
    """Every Corral model reference (Ollama server, store, imported GGUF) with its source and
    context length, then the bundled embedder; a backend that is away is left out."""
    from core.models.catalog import collect

    rows = collect(settings).models
    created = 0
    out = [{"id": m.ref, "object": "model", "created": created, "owned_by": "corral",
            "corral": {"name": m.name, "source": m.source, "context_length": m.context_length,
                       "family": m.family, "parameter_size": m.parameter_size,
                       "quantization": m.quantization, "also": m.also, "problem": m.problem}}
           for m in rows]
    out.append({"id": EMBEDDER_REF, "object": "model", "created": created, "owned_by": "corral",
                "corral": {"name": "all-MiniLM-L6-v2", "source": "embedder",
                           "context_length": 256}})
    return out


class Embeddings:
    """Any Corral embedder by reference; one request at a time per embedder, in order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queues = FairQueues()

    def spec(self, model: str) -> str:
        """The embedder spec for a ``model`` field: the bundled MiniLM, the settings' default
        embedder, ``ollama:NAME``, or a library/``store:`` GGUF; never a path of the client's."""
        from core.rag.encoding import MINILM_SPECS

        text = model.strip()
        if text.lower() in MINILM_SPECS:
            return "minilm"
        if text == self.settings.embedder.default.strip() or text.lower().startswith("ollama:"):
            return text
        from core.serve.chat import library_ref

        library_ref(text, self.settings)  # refuses paths, names only what exists
        from core.models.refs import resolve

        resolved = resolve(text, self.settings)
        if resolved.path is None:
            raise ApiError(400, f"{model} cannot embed here", param="model")
        return str(resolved.path)

    def __call__(self, req: EmbeddingRequest) -> dict[str, Any]:
        from core.rag.embedder import shared_embedder

        texts = req.texts()
        spec = self.spec(req.model)
        emb = shared_embedder(spec, self.settings.embedder.mode if spec == self.settings.
                              embedder.default else "standard", ollama=self.settings.ollama)
        if req.dimensions is not None and req.dimensions != emb.dimension:
            raise ApiError(400, f"this embedder gives {emb.dimension} dimensions",
                           param="dimensions")
        queue = self.queues(spec)
        queue.acquire()
        try:
            vectors = np.asarray(emb.embed(texts), dtype=np.float32)
            tokens = sum(int(emb.count_tokens(t)) for t in texts)
        finally:
            queue.release()
        data = [{"object": "embedding", "index": i,
                 "embedding": (base64.b64encode(v.astype("<f4").tobytes()).decode("ascii")
                               if req.encoding_format == "base64" else v.tolist())}
                for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": req.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


class Moderation:
    """Llama Guard's verdicts on texts, as OpenAI moderation results."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._guard: Any = None
        self._key = ""

    def guard(self) -> Any:
        """The guard model of the Safety settings (even with chat checks off: moderation is
        asked for), made again when those settings change."""
        from core.serve.chat import guard_settings_key

        key = guard_settings_key(self.settings)
        with self._lock:
            if self._guard is None or key != self._key:
                self._key = key
                from core.safety.guard import GuardService, UnavailableGuard

                if not self.settings.safety.guard_model.strip():
                    raise FeatureUnavailable("no guard model is chosen, so nothing can moderate",
                                             hint="Choose one on the Safety page.")
                try:
                    service = GuardService.from_settings(self.settings)
                    service.preflight()
                    self._guard = service
                except CorralError as exc:  # fail closed: the verdict says it could not run
                    self._guard = UnavailableGuard.from_settings(self.settings, exc)
            return self._guard

    def __call__(self, req: ModerationRequest) -> dict[str, Any]:
        texts = req.texts()
        guard = self.guard()
        results = [moderation_result(guard.check([{"role": "user", "content": t}], "user",
                                                 direction="input"))
                   for t in texts]
        from core.serve.shapes import new_id

        return {"id": new_id("modr"), "model": req.model or guard.guard_model,
                "results": results}


def search(settings: Settings, kb_name: str, req: SearchRequest) -> dict[str, Any]:
    """Knowledge-base search in OpenAI's vector-store search shape."""
    from core.rag.knowledge_base import open_kb
    from core.rag.retriever import Retriever

    query = req.text()
    threshold = req.ranking_options.score_threshold if req.ranking_options else 0.0
    kb = open_kb(kb_name, settings=settings)
    try:
        hits = Retriever(kb).search(query, req.max_num_results, threshold=threshold)
    finally:
        kb.close()
    data = [{"file_id": h.source, "filename": h.file_name or h.source.rsplit("/", 1)[-1],
             "score": float(h.score),
             "attributes": {"page": h.page, "chunk_index": h.chunk_index, "chunk_id": h.id},
             "content": [{"type": "text", "text": h.text}]} for h in hits]
    return {"object": "vector_store.search_results.page", "search_query": [query],
            "data": data, "has_more": False, "next_page": None}
