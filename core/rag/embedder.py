"""Embedders: text -> L2-normalised float32 vectors, plus the tokenizer chunks are measured in.

Kinds: the bundled all-MiniLM-L6-v2 (sentence-transformers, offline), any other
sentence-transformers model folder, Ollama embedding models (``ollama:NAME``) and GGUF
embedding models through the llama.cpp engine child. ``make_embedder(spec, mode)`` picks one;
``mode`` 'fast'/'fastest' come from ``core.rag.fast_embedder`` (see ``_fast_hook``). The model
folder, tokenizer and pooling helpers live in ``core.rag.encoding`` (re-exported here).

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
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from core.config import OllamaSettings
from core.errors import CorralError, FeatureUnavailable, ModelNotFound
from core.rag import fast_embedder
from core.rag.encoding import MINILM_NAME as MINILM_NAME
from core.rag.encoding import MINILM_SPECS as MINILM_SPECS
from core.rag.encoding import Notice as Notice
from core.rag.encoding import WordPieceTokens, model_max_tokens, normalise
from core.rag.encoding import load_wordpiece as load_wordpiece
from core.rag.encoding import minilm_path as minilm_path
from core.rag.encoding import minilm_tokenizer as minilm_tokenizer
from core.rag.encoding import parse_spec as parse_spec

log = logging.getLogger(__name__)

MODES = ("standard", "fast", "fastest")


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
    except (ImportError, AttributeError):  # an old or missing transformers: nothing to silence
        pass


# --- sentence-transformers ---------------------------------------------------------------

#: What loading a model folder raises when its files are missing or damaged (a config HF
#: cannot read is a ValueError, a torch state dict that does not fit a RuntimeError).
_MODEL_FILE_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, RuntimeError, KeyError)


def _safetensor_error() -> type[Exception]:
    """safetensors' error for a damaged or truncated weights file (it derives from Exception)."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # no safetensors: no such error
        return OSError
    error: type[Exception] = SafetensorError
    return error


class SentenceTransformerEmbedder(WordPieceTokens):
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
        self.max_tokens = model_max_tokens(folder)
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
                        "the standard embedder needs torch and sentence-transformers, which "
                        "this copy of Corral leaves out",
                        hint="Use the fast mode, or install Corral from pip.",
                    ) from exc
                try:
                    model = SentenceTransformer(
                        str(self.folder), device=self.device, local_files_only=True
                    )
                except (*_MODEL_FILE_ERRORS, _safetensor_error()) as exc:
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
        return normalise(vectors, self.dimension)


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
        arr = normalise(self._raw_vectors(texts))
        if arr.shape[0] != len(texts):
            raise CorralError(f"the embedder returned {arr.shape[0]} vectors for {len(texts)} texts")
        self._dimension = int(arr.shape[1])
        return arr


# --- Ollama ----------------------------------------------------------------------------


class OllamaEmbedder(_ProbedDimension, WordPieceTokens):
    """An Ollama embedding model through ``/api/embed``.

    Ollama does not expose the model's tokenizer, so chunks are measured with MiniLM's
    WordPiece and kept well under the model's context (``max_tokens``, at most 512).
    """

    mode = "standard"

    def __init__(self, model: str, *, host: str = "", connect_timeout: float = 5.0,
                 read_timeout: float = 300.0, max_tokens: int | None = None) -> None:
        """``host``: the Ollama address from the settings ('' means OLLAMA_HOST, else
        127.0.0.1:11434); the embedder never reads the settings itself."""
        self.model_name = model
        self.name = f"ollama:{model}"
        self.spec = self.name
        self.host = host
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.tokenizer_name = f"wordpiece:{MINILM_NAME} (estimate)"
        self._tokenizer_folder = str(minilm_path())
        self.max_tokens = max_tokens or 512
        self._dimension: int | None = None
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            from core.models.ollama_client import OllamaClient

            self._client = OllamaClient(self.host or None, self.connect_timeout, self.read_timeout)
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


def _fast_hook(folder: Path, mode: str, name: str, spec: str, notice: Notice | None,
               calibration: str = "") -> Embedder | None:
    """The fast embedder (``core.rag.fast_embedder``) for ``mode``, or None (after telling the
    user why) when it cannot run here: OpenVINO or nncf not installed, a model the fast modes
    cannot reproduce, a failed export, a cache that cannot be written. Anything else is a bug
    and raises: it must not pass for "fast mode unavailable".
    """
    try:
        emb: Embedder = fast_embedder.make_fast_embedder(folder, mode, name=name, spec=spec,
                                                         notice=notice, calibration_id=calibration)
        return emb
    except CorralError as exc:
        reason = f"the {mode} embedder failed: {exc.message}"
    except OSError as exc:  # the export cache cannot be read or written (disk full, rights)
        reason = f"the {mode} embedder's files are not usable ({exc})"
    message = f"{reason}; using the standard embedder instead"
    log.warning(message)
    if notice is not None:
        notice(message)
    return None


def make_embedder(spec: str = "minilm", mode: str = "standard", *, notice: Notice | None = None,
                  ollama: OllamaSettings | None = None, calibration: str = "") -> Embedder:
    """Build the embedder named by ``spec`` ('minilm', a model folder, 'ollama:NAME', a .gguf).

    ``mode`` 'fast'/'fastest' apply to sentence-transformers models; when they cannot be
    used, ``notice`` gets one sentence and the standard embedder is returned. ``ollama``: where
    an ``ollama:NAME`` embedder finds the server (the settings' section; None: OLLAMA_HOST,
    else 127.0.0.1:11434).
    """
    if mode not in MODES:
        raise CorralError(f"unknown embedder mode {mode!r}; use one of {', '.join(MODES)}")
    kind, detail = parse_spec(spec)
    if kind in ("minilm", "folder"):
        folder = minilm_path() if kind == "minilm" else Path(detail)
        name = MINILM_NAME if kind == "minilm" else Path(detail).name
        spec_text = "minilm" if kind == "minilm" else str(Path(detail).resolve())
        if mode != "standard":
            fast = _fast_hook(folder, mode, name, spec_text, notice, calibration)
            if fast is not None:
                return fast
        return SentenceTransformerEmbedder(folder, name=name, spec=spec_text)
    if mode != "standard" and notice is not None:
        notice(f"the {mode} mode applies to sentence-transformers models; using standard")
    if kind == "ollama":
        if not detail:
            raise ModelNotFound("an Ollama embedder needs a model name, e.g. ollama:nomic-embed-text")
        o = ollama or OllamaSettings()
        return OllamaEmbedder(detail, host=o.host, connect_timeout=o.connect_timeout,
                              read_timeout=o.read_timeout)
    if kind == "gguf":
        return GgufEmbedder(Path(detail))
    raise ModelNotFound(f"no embedding model called {spec!r}")


_shared: dict[tuple[Any, ...], Embedder] = {}
_shared_lock = threading.Lock()


def shared_embedder(spec: str = "minilm", mode: str = "standard", *, notice: Notice | None = None,
                    ollama: OllamaSettings | None = None, calibration: str = "") -> Embedder:
    """A process-wide cached embedder per (spec, mode, calibration) (and Ollama address): the
    model loads once. Arguments as for ``make_embedder``."""
    key: tuple[Any, ...] = (spec or "minilm", mode, calibration)
    if parse_spec(spec)[0] == "ollama":
        o = ollama or OllamaSettings()
        key += (o.host, o.connect_timeout, o.read_timeout)
    with _shared_lock:
        emb = _shared.get(key)
        if emb is None:
            emb = make_embedder(spec, mode, notice=notice, ollama=ollama, calibration=calibration)
            _shared[key] = emb
        return emb


def approximate_token_spans(text: str) -> list[tuple[int, int]]:
    """Word/punctuation spans: a fallback tokenizer shape for embedders without one."""
    return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]
