"""Static vs contextual vectors, and mean pooling step by step, with the bundled MiniLM.

word2vec gives a word one vector wherever it stands; MiniLM's token outputs give it one per
context. A sentence embedding is those token vectors, averaged over the real tokens (the
attention mask leaves the padding out), then scaled to length 1: done here by hand, step by
step, and checked against what sentence-transformers returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import CorralError


def _model() -> Any:
    from core.rag.embedder import SentenceTransformerEmbedder, shared_embedder

    emb = shared_embedder("minilm")
    if not isinstance(emb, SentenceTransformerEmbedder):  # the factory's contract for minilm
        raise CorralError("the bundled MiniLM embedder is not a sentence-transformers model")
    return emb.model


def _token_outputs(model: Any, sentences: list[str]) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
    """(tokens per sentence, token vectors (n, L, 384), attention mask (n, L)) of a padded batch."""
    import torch

    features = model.preprocess(sentences)
    with torch.no_grad():
        out = model[0](dict(features))
    ids = features["input_ids"].tolist()
    mask = features["attention_mask"].numpy().astype(np.float32)
    tokens = [model.tokenizer.convert_ids_to_tokens(row) for row in ids]
    return tokens, out["token_embeddings"].numpy().astype(np.float64), mask


@dataclass
class PoolingSteps:
    sentences: list[str]
    tokens: list[list[str]]  # per sentence, padded to the batch's longest ([PAD])
    token_vectors: np.ndarray  # (n, L, 384): step 1, the transformer's outputs
    mask: np.ndarray  # (n, L): step 2, 1 for real tokens, 0 for padding
    mean: np.ndarray  # (n, 384): step 3, sum(vectors * mask) / sum(mask)
    normalised: np.ndarray  # (n, 384): step 4, mean / |mean|
    library: np.ndarray  # (n, 384): sentence-transformers' own encode()
    cosine: np.ndarray  # (n,): cosine(normalised, library), 1.0 when the steps are right

    def to_dict(self, preview: int = 4) -> dict[str, Any]:
        return {"sentences": [
            {"sentence": s, "tokens": self.tokens[i], "mask": self.mask[i].astype(int).tolist(),
             "real_tokens": int(self.mask[i].sum()),
             "mean_norm": float(np.linalg.norm(self.mean[i])),
             "normalised_preview": [round(float(x), 6) for x in self.normalised[i, :preview]],
             "library_preview": [round(float(x), 6) for x in self.library[i, :preview]],
             "cosine": float(self.cosine[i])}
            for i, s in enumerate(self.sentences)]}


def pooling_steps(sentences: list[str]) -> PoolingSteps:
    """Mean pooling by hand over one padded batch of ``sentences``, beside the library's result."""
    sentences = [s for s in sentences if s.strip()]
    if not sentences:
        raise CorralError("give at least one sentence to pool")
    model = _model()
    tokens, vectors, mask = _token_outputs(model, sentences)
    summed = (vectors * mask[:, :, None]).sum(axis=1)
    mean = summed / np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)
    normalised = mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)
    library = np.asarray(model.encode(sentences, normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=False), dtype=np.float64)
    cosine = (normalised * library).sum(axis=1) / np.linalg.norm(library, axis=1)
    return PoolingSteps(sentences, tokens, vectors, mask, mean, normalised, library, cosine)


@dataclass
class ContextTable:
    word: str
    sentences: list[str]
    contextual: np.ndarray  # (n, n) cosine of the word's MiniLM vectors in each pair of sentences
    static: np.ndarray | None  # (n, n) the same for a static model: one vector, so all 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "sentences": self.sentences,
                "contextual": np.round(self.contextual, 4).tolist(),
                "static": None if self.static is None else np.round(self.static, 4).tolist()}


def _find(pieces: list[str], tokens: list[str]) -> int | None:
    for start in range(len(tokens) - len(pieces) + 1):
        if tokens[start:start + len(pieces)] == pieces:
            return start
    return None


def context_table(word: str, sentences: list[str], static_vector: np.ndarray | None = None
                  ) -> ContextTable:
    """How alike ``word``'s MiniLM vector is across ``sentences`` (the mean of its WordPiece
    pieces' outputs, first occurrence), and, given a static model's vector, the same table for
    it (every cell 1: one vector for every context)."""
    sentences = [s for s in sentences if s.strip()]
    if len(sentences) < 2:
        raise CorralError("give at least two sentences that use the word")
    model = _model()
    pieces = model.tokenizer.tokenize(word)
    if not pieces:
        raise CorralError(f"{word!r} has no tokens")
    tokens, vectors, _mask = _token_outputs(model, sentences)
    rows = []
    for n, s in enumerate(sentences):
        at = _find(pieces, tokens[n])
        if at is None:
            raise CorralError(f"{word!r} does not occur in the sentence {s!r}",
                              hint="Use the word in every sentence.")
        rows.append(vectors[n, at:at + len(pieces)].mean(axis=0))
    v = np.array(rows)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    static = None
    if static_vector is not None:
        u = np.asarray(static_vector, dtype=np.float64)
        u = u / (np.linalg.norm(u) or 1.0)
        same = np.tile(u, (len(sentences), 1))
        static = same @ same.T
    return ContextTable(word, sentences, v @ v.T, static)
