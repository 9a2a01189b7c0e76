"""The tokenizers the Tokens view compares, each turning text into ``TokenizedText``.

* a GGUF / Ollama-store model's own vocabulary, through the llama.cpp engine child;
* the embedder's WordPiece (all-MiniLM-L6-v2's ``tokenizer.json``);
* a byte-level BPE trained on the user's own text or knowledge base.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.analysis.tokens import TokenizedText, TokenSpan, align_pieces, bytes_label
from core.config import Settings
from core.errors import CorralError, FeatureUnavailable

if TYPE_CHECKING:
    from tokenizers import Tokenizer

WORDPIECE_REFS = {"wordpiece", "minilm", "embedder"}
BPE_REFS = {"bpe", "trained-bpe"}

#: GGUF ``tokenizer.ggml.model`` -> the family shown to the user
GGUF_FAMILIES = {
    "llama": "sentencepiece",
    "t5": "sentencepiece",
    "gpt2": "bpe",
    "bert": "wordpiece",
    "rwkv": "rwkv",
    "plamo2": "sentencepiece",
}


class TextTokenizer(Protocol):
    name: str
    kind: str

    def tokenize(self, text: str) -> TokenizedText: ...


class VocabularyEngine(Protocol):
    """What ``core.models.engine.EngineClient`` offers for tokenization."""

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]: ...

    def token_pieces(self, ids: Sequence[int]) -> list[bytes]: ...

    def token_types(self, ids: Sequence[int]) -> list[str]: ...


# --- a model's own vocabulary ----------------------------------------------------------


class ModelTokenizer:
    """A GGUF model's vocabulary. BOS is added when the model adds it, as the model sees it.

    Text is tokenized with ``special=False`` (typed ``<|im_start|>`` stays plain text), unless
    ``parse_special``: then it is read as a rendered prompt, the way the engine reads the
    ``model`` format's template output: special-token texts become their tokens (and cover
    their text), and BOS is added only if the text does not already begin with it."""

    def __init__(
        self, engine: VocabularyEngine, name: str, *, kind: str = "sentencepiece",
        add_bos: bool = True, bos_id: int | None = None, parse_special: bool = False,
    ) -> None:
        self.engine = engine
        self.name = name
        self.kind = kind
        self.add_bos = add_bos
        self.bos_id = bos_id
        self.parse_special = parse_special

    def _ids(self, text: str) -> tuple[list[int], list[bool] | None]:
        """The token ids, and (when special texts are parsed) which tokens have no text."""
        if not self.parse_special:
            if not text and not self.add_bos:
                return [], None
            return self.engine.tokenize(text, add_bos=self.add_bos, special=False), None
        ids = self.engine.tokenize(text, add_bos=False, special=True) if text else []
        added = self.bos_id is not None and self.add_bos and (not ids or ids[0] != self.bos_id)
        if added and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids, [added and i == 0 for i in range(len(ids))]

    def tokenize(self, text: str) -> TokenizedText:
        ids, inserted = self._ids(text)
        pieces = self.engine.token_pieces(ids) if ids else []
        types = self.engine.token_types(ids) if ids else []
        special = [t in ("control", "unused") for t in types]
        labels = [_model_label(p, t) for p, t in zip(pieces, types, strict=True)]
        spans, lossless = align_pieces(text, ids, pieces, special, labels, inserted)
        return TokenizedText(self.name, self.kind, text, spans, lossless)


def _model_label(piece: bytes, ttype: str) -> str:
    if ttype == "byte" and len(piece) == 1:
        return f"<0x{piece[0]:02X}>"
    return bytes_label(piece)


def _resolve_model_path(ref: str, settings: Settings) -> tuple[Path, str]:
    """(GGUF path, display name) for a model reference: a .gguf path, ``store:NAME``, an
    imported model's name, or ``ollama:NAME`` when that model is also in the local store."""
    from core.models import refs

    resolved = refs.resolve(refs.parse_ref(ref), settings)
    if resolved.path is None:  # served by Ollama: its vocabulary is in the blob on disk, if any
        try:
            resolved = refs.resolve(f"store:{resolved.name}", settings)
        except CorralError:
            raise FeatureUnavailable(
                f"{ref} runs in the Ollama server, which does not share its vocabulary",
                hint="Use a model from Ollama's store on this machine (store:NAME) or a .gguf.",
            ) from None
    assert resolved.path is not None
    return Path(resolved.path), resolved.display


def model_tokenizer(ref: str, settings: Settings, *, add_bos: bool | None = None,
                    parse_special: bool = False) -> ModelTokenizer:
    """The vocabulary of the model ``ref``, loaded vocabulary-only in the engine child
    (``settings`` say where Ollama's store and imported models are); ``parse_special``: read
    texts as rendered prompts (see ModelTokenizer)."""
    from core.models.pool import engine_pool

    path, name = _resolve_model_path(ref, settings)
    engine = engine_pool().engine(path, role="vocab")
    info = engine.load()
    meta = info.get("metadata") or {}
    family = GGUF_FAMILIES.get(str(meta.get("tokenizer.ggml.model", "llama")), "sentencepiece")
    bos = bool(info.get("add_bos", True)) if add_bos is None else add_bos
    return ModelTokenizer(engine, name, kind=family, add_bos=bos, bos_id=int(info["bos"]),
                          parse_special=parse_special)


# --- WordPiece (the embedder's tokenizer) ----------------------------------------------


class WordPieceTokenizer:
    """A Hugging Face WordPiece tokenizer; spans come from its own character offsets.

    Not lossless: it lower-cases, strips accents and drops whitespace, so the spans leave
    gaps and a token's ``bytes`` are its vocabulary string, not the input's bytes.
    """

    kind = "wordpiece"

    def __init__(self, tokenizer: Tokenizer | None = None, name: str = "MiniLM WordPiece") -> None:
        if tokenizer is None:
            from core.rag.encoding import minilm_tokenizer

            tokenizer = minilm_tokenizer()
        self.tokenizer = tokenizer
        self.name = name
        added = tokenizer.get_added_tokens_decoder()
        self.special_ids = {int(i) for i, tok in added.items() if getattr(tok, "special", False)}

    def encode(self, text: str) -> Any:
        return self.tokenizer.encode(text, add_special_tokens=True)

    def tokenize(self, text: str) -> TokenizedText:
        enc = self.encode(text)
        spans: list[TokenSpan] = []
        for i, (tid, tok, (s, e), sp) in enumerate(
            zip(enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask, strict=True)
        ):
            if sp and s == e and i > 0:  # [SEP] added after the text: place it at the end
                s = e = len(text)
            special = bool(sp) or tid in self.special_ids  # typed "[SEP]" becomes the real one
            spans.append(TokenSpan(tid, text[s:e], s, e, tok.encode("utf-8"), special, tok))
        return TokenizedText(self.name, self.kind, text, spans, lossless=False)


# --- byte-level BPE trained on the user's text --------------------------------------------


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character -> the byte it stands for (``Ġ`` -> 0x20)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def byte_level_bytes(token: str) -> bytes:
    table = byte_decoder()
    return bytes(table[c] for c in token)


def train_byte_bpe(
    texts: Iterable[str], vocab_size: int = 1000, min_frequency: int = 2
) -> Tokenizer:
    """A byte-level BPE (GPT-2 style: every byte is in the alphabet, so nothing is unknown)."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise FeatureUnavailable("the tokenizers package is not installed") from exc
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


class TrainedBpeTokenizer:
    """A byte-level BPE trained on the user's text; lossless, so spans cover the text."""

    kind = "bpe"

    def __init__(self, tokenizer: Tokenizer, name: str = "BPE trained on your text") -> None:
        self.tokenizer = tokenizer
        self.name = name

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 1000, name: str = "BPE trained on your text"
    ) -> TrainedBpeTokenizer:
        return cls(train_byte_bpe(texts, vocab_size), name)

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def encode(self, text: str) -> Any:
        return self.tokenizer.encode(text)

    def tokenize(self, text: str) -> TokenizedText:
        enc = self.encode(text)
        pieces = [byte_level_bytes(t) for t in enc.tokens]
        spans, lossless = align_pieces(text, enc.ids, pieces, [False] * len(pieces))
        return TokenizedText(self.name, self.kind, text, spans, lossless)


# --- by name -------------------------------------------------------------------------


def open_tokenizer(
    ref: str, settings: Settings, *, train_text: str | Iterable[str] | None = None,
    bpe_vocab_size: int = 1000, parse_special: bool = False,
) -> TextTokenizer:
    """A tokenizer by reference: 'wordpiece'/'minilm', 'bpe' (trained on ``train_text``),
    or a model (a .gguf path, ``store:NAME``, an imported model's name; ``settings`` say
    where Ollama's store and imported models are). ``parse_special`` applies to a model's
    vocabulary (WordPiece always reads its own special tokens; a trained BPE has none)."""
    key = ref.strip().lower()
    if key in WORDPIECE_REFS:
        return WordPieceTokenizer()
    if key in BPE_REFS:
        if train_text is None:
            raise CorralError("A trained BPE needs some text to learn from")
        texts = [train_text] if isinstance(train_text, str) else list(train_text)
        return TrainedBpeTokenizer.train(texts, bpe_vocab_size)
    return model_tokenizer(ref, settings, parse_special=parse_special)


def local_model_refs(settings: Settings) -> list[str]:
    """Models whose vocabulary can be read here: imported GGUF files and Ollama's store."""
    from core.models import library
    from core.models.ollama_store import find_store

    refs: list[str] = []
    try:
        refs.extend(m.name for m in library.load())
    except CorralError:
        pass
    store = find_store(settings.ollama.store_dir)
    if store is not None:
        refs.extend(f"store:{m.short_name}" for m in store.models() if not m.problems)
    return refs
