"""Contestants: anything that scores chunks for a query. Corral's embedders (by the names
``corral serve`` takes, with ``:fast``/``:fastest`` for a speed mode) and three baselines:
BM25 (Corral's own keyword index), a TF-IDF bag of words, and random vectors (the floor).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import CorralError

if TYPE_CHECKING:
    from core.config import OllamaSettings
    from core.rag.embedder import Embedder

#: progress(fraction, text); may raise Cancelled to stop
Progress = Callable[[float, str], None]
BASELINES = ("bm25", "tfidf", "random")
BATCH = 128
RANDOM_DIMENSIONS = 384


def _quiet(_fraction: float, _text: str) -> None:
    return None


class Contestant:
    """Fit it on the corpus, then score queries against it (rows: queries, columns: chunks).

    ``vectors`` are the corpus's L2-normalised vectors (dense or sparse) for the tasks that
    compare chunks; None where the contestant has none (BM25)."""

    kind = "embedder"

    def __init__(self, name: str) -> None:
        self.name = name
        self.dimensions: int | None = None
        self.max_tokens: int | None = None
        self.vectors: Any = None
        self.fit_seconds = 0.0
        self.note = ""

    def prepare(self) -> None:
        """Load what the contestant needs (a model), before anything is timed."""

    def fit(self, texts: Sequence[str], progress: Progress = _quiet) -> None:
        self.prepare()
        started = time.perf_counter()
        self.vectors = self._embed_corpus(list(texts), progress)
        self.fit_seconds = time.perf_counter() - started

    def embed(self, texts: Sequence[str]) -> Any:
        raise NotImplementedError

    def _embed_corpus(self, texts: list[str], progress: Progress) -> Any:
        return self.embed(texts)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return dense(self.embed(list(queries)) @ self.vectors.T)

    @property
    def index_bytes(self) -> int:
        v = self.vectors
        if v is None:
            return 0
        if hasattr(v, "nnz"):  # sparse: values and column numbers
            return int(v.data.nbytes + v.indices.nbytes + v.indptr.nbytes)
        return int(v.nbytes)

    def close(self) -> None:
        """Free what fit() built (scratch files)."""


def dense(m: Any) -> np.ndarray:
    return np.asarray(m.toarray() if hasattr(m, "toarray") else m, dtype=np.float64)


def row_cosines(a: Any, b: Any) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b`` (rows L2-normalised)."""
    if hasattr(a, "multiply"):
        out: np.ndarray = np.asarray(a.multiply(b).sum(axis=1)).ravel()
        return out
    rows: np.ndarray = np.einsum("ij,ij->i", np.asarray(a, np.float64), np.asarray(b, np.float64))
    return rows


class EmbedderContestant(Contestant):
    """A Corral embedder; loaded by ``load`` on first use."""

    def __init__(self, name: str, load: Callable[[], Embedder]) -> None:
        super().__init__(name)
        self._load = load
        self.embedder: Embedder | None = None

    def prepare(self) -> None:
        if self.embedder is not None:
            return
        emb = self._load()
        emb.embed(["warm up"])  # the model loads now, not inside the timing
        self.embedder = emb
        self.dimensions = emb.dimension
        self.max_tokens = emb.max_tokens

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.prepare()
        assert self.embedder is not None
        return np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)

    def _embed_corpus(self, texts: list[str], progress: Progress) -> np.ndarray:
        """In batches (progress and cancel between them) of texts of like length, longest
        first, as sentence-transformers orders one big call: little padding."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dimensions or 0), dtype=np.float32)
        for start in range(0, len(texts), BATCH):
            progress(start / max(1, len(texts)), f"{self.name}: embedding chunks "
                     f"{start:,} of {len(texts):,}")
            batch = order[start:start + BATCH]
            out[batch] = self.embed([texts[i] for i in batch])
        return out


class RandomContestant(Contestant):
    """Random unit vectors, one per distinct text (seeded): the floor any model must beat."""

    kind = "baseline"

    def __init__(self, seed: int = 0) -> None:
        super().__init__("random")
        self.seed = seed
        self.dimensions = RANDOM_DIMENSIONS

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), RANDOM_DIMENSIONS), dtype=np.float32)
        for i, text in enumerate(texts):
            key = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "little")
            out[i] = np.random.default_rng([self.seed, key]).standard_normal(RANDOM_DIMENSIONS)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def _analyzer(text: str) -> list[str]:
    from core.rag.keyword import STOPWORDS, words

    return [w for w in words(text) if w not in STOPWORDS]


class TfidfContestant(Contestant):
    """A TF-IDF bag of words (scikit-learn), cosine-compared: one-hot words, weighted."""

    kind = "baseline"

    def __init__(self) -> None:
        super().__init__("tfidf")
        self._vectorizer: Any = None

    def _embed_corpus(self, texts: list[str], progress: Progress) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer = TfidfVectorizer(analyzer=_analyzer, sublinear_tf=True)
        vectors = self._vectorizer.fit_transform(texts)
        self.dimensions = len(self._vectorizer.vocabulary_)
        return vectors

    def embed(self, texts: Sequence[str]) -> Any:
        if self._vectorizer is None:
            raise CorralError("the TF-IDF baseline must be fitted on the corpus first")
        return self._vectorizer.transform(list(texts))


class Bm25Contestant(Contestant):
    """BM25 through Corral's keyword index (a scratch copy over the evaluation corpus)."""

    kind = "baseline"

    def __init__(self) -> None:
        super().__init__("bm25")
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._index: Any = None
        self._n = 0
        self._bytes = 0

    def fit(self, texts: Sequence[str], progress: Progress = _quiet) -> None:
        from core.rag.keyword import KeywordIndex

        self.close()
        started = time.perf_counter()
        self._folder = tempfile.TemporaryDirectory(prefix="corral-eval-bm25-")
        path = Path(self._folder.name) / "keywords.sqlite3"
        self._index = KeywordIndex(path)
        ids = [str(i) for i in range(len(texts))]
        self._index.upsert(ids, [""] * len(ids), [""] * len(ids), list(texts))
        self._index.refresh()
        self._n = len(ids)
        self._bytes = path.stat().st_size
        self.fit_seconds = time.perf_counter() - started

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        if self._index is None:
            raise CorralError("the BM25 baseline must be fitted on the corpus first")
        out = np.zeros((len(queries), self._n), dtype=np.float64)
        for q, query in enumerate(queries):
            for cid, score in self._index.search(query, self._n):
                out[q, int(cid)] = score
        return out

    @property
    def index_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


def split_name(name: str) -> tuple[str, str]:
    """'minilm:fast' -> ('minilm', 'fast'); a name without a speed mode is standard."""
    from core.rag.embedder import MODES

    spec, _, mode = name.rpartition(":")
    if spec and mode in MODES:
        return spec, mode
    return name, "standard"


def contestant(name: str, *, seed: int = 0, ollama: OllamaSettings | None = None) -> Contestant:
    """The contestant called ``name`` (an embedder name, or bm25 / tfidf / random)."""
    name = name.strip()
    if not name:
        raise CorralError("an empty embedder name", hint="Give names separated by commas.")
    if name == "bm25":
        return Bm25Contestant()
    if name == "tfidf":
        return TfidfContestant()
    if name == "random":
        return RandomContestant(seed)
    return EmbedderContestant(name, lambda: load_embedder(name, ollama=ollama))


def load_embedder(name: str, *, ollama: OllamaSettings | None = None) -> Embedder:
    """The embedder called ``name`` (loaded once per process), in the mode asked for: a fast
    mode that cannot run here is an error, not a quiet stand-in."""
    from core.rag.embedder import shared_embedder

    spec, mode = split_name(name)
    notes: list[str] = []
    emb = shared_embedder(spec, mode, notice=notes.append, ollama=ollama)
    if emb.mode != mode:
        raise CorralError(f"the {mode} mode of {spec} is not available here",
                          hint=" ".join(notes) or "Install Corral's fast extra (OpenVINO).")
    return emb


def contestants(names: Sequence[str], *, seed: int = 0, ollama: OllamaSettings | None = None
                ) -> list[Contestant]:
    """The named contestants, then the three baselines (always), each once."""
    wanted = list(dict.fromkeys([n.strip() for n in names if n.strip()] + list(BASELINES)))
    return [contestant(n, seed=seed, ollama=ollama) for n in wanted]

