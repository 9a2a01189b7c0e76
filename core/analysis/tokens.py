"""Token spans: where each token of a tokenizer sits in the user's text, with its exact bytes.

Pure functions shared by every tokenizer kind (see ``token_sources`` for the tokenizers
themselves): aligning per-token bytes to character offsets (FORMATS 7.3), honest labels for
byte-fallback and partial UTF-8 pieces, counts, and where two tokenizers cut differently.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def _hex_errors(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):
        raise err
    bad = err.object[err.start : err.end]
    return "".join(f"<0x{b:02X}>" for b in bad), err.end


codecs.register_error("corral_hex", _hex_errors)


def bytes_label(data: bytes) -> str:
    """Show bytes as text where they are whole UTF-8 characters, else as ``<0xNN>``.

    >>> bytes_label(b" w\\xc3\\xb6")
    ' wö'
    >>> bytes_label(b" \\xf0\\x9f\\x91")
    ' <0xF0><0x9F><0x91>'
    """
    return data.decode("utf-8", errors="corral_hex")


@dataclass(frozen=True)
class TokenSpan:
    """One token: its id, the input characters it covers and the bytes the model sees.

    ``text`` is always ``input[start:end]``; a byte-fallback token that does not complete a
    character covers nothing (``start == end``) and the token that completes it covers the
    whole character. ``piece`` is how the token reads on its own (``<0xF0>``, ``##ing``,
    `` Hello``); ``bytes`` are the token's own bytes (for WordPiece: its vocabulary string).
    """

    id: int
    text: str
    start: int
    end: int
    bytes: bytes
    special: bool = False
    piece: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "bytes": self.bytes.hex(),
            "special": self.special,
            "piece": self.piece,
        }


@dataclass
class TokenizedText:
    """A text split by one tokenizer."""

    tokenizer: str  # what the user picked, e.g. "tiny-llama.gguf", "MiniLM WordPiece"
    kind: str  # "sentencepiece", "bpe", "wordpiece"
    text: str
    spans: list[TokenSpan] = field(default_factory=list)
    lossless: bool = True  # span texts concatenated give the input back

    @property
    def ids(self) -> list[int]:
        return [s.id for s in self.spans]

    @property
    def count(self) -> int:
        """Every token the model sees, special ones included."""
        return len(self.spans)

    @property
    def content_count(self) -> int:
        return sum(1 for s in self.spans if not s.special)

    @property
    def chars_per_token(self) -> float:
        n = self.content_count
        return len(self.text) / n if n else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer,
            "kind": self.kind,
            "count": self.count,
            "chars_per_token": round(self.chars_per_token, 3),
            "lossless": self.lossless,
            "tokens": [s.to_json() for s in self.spans],
        }


def byte_to_char_index(text: str) -> list[int]:
    """``b2c[i]`` = characters wholly inside the first ``i`` UTF-8 bytes of ``text``."""
    b2c = [0]
    for c, ch in enumerate(text):
        n = len(ch.encode("utf-8", errors="surrogatepass"))
        b2c.extend([c] * (n - 1))
        b2c.append(c + 1)
    return b2c


def align_pieces(
    text: str,
    ids: Sequence[int],
    pieces: Sequence[bytes],
    special: Sequence[bool],
    labels: Sequence[str] | None = None,
    inserted: Sequence[bool] | None = None,
) -> tuple[list[TokenSpan], bool]:
    """Character spans for tokens whose bytes concatenate to the text (FORMATS 7.3).

    Inserted tokens contribute no text: by default the special ones (a BOS the tokenizer
    adds); when special-token texts were parsed, only those in ``inserted``. One leading
    space in the pieces that is not in the text (SentencePiece's dummy prefix) is allowed.
    Returns ``(spans, lossless)``; when the pieces do not reproduce the text the spans are a
    best effort and ``lossless`` is False.
    """
    added = special if inserted is None else inserted
    if not (len(ids) == len(pieces) == len(special) == len(added)):
        raise ValueError("ids, pieces and special flags must have the same length")
    data = text.encode("utf-8", errors="surrogatepass")
    content = [b"" if sp else p for p, sp in zip(pieces, added, strict=True)]
    joined = b"".join(content)
    prefix = len(joined) - len(data)
    b2c = byte_to_char_index(text)
    names = list(labels) if labels is not None else [bytes_label(p) for p in pieces]

    def span(i: int, b_start: int, b_end: int) -> TokenSpan:
        s, e = b2c[b_start], b2c[b_end]
        return TokenSpan(ids[i], text[s:e], s, e, bytes(pieces[i]), bool(special[i]), names[i])

    if prefix in (0, 1) and joined[prefix:] == data and joined[:prefix] in (b"", b" "):
        out: list[TokenSpan] = []
        pos = -prefix
        for i, p in enumerate(content):
            s = max(pos, 0)
            pos += len(p)
            out.append(span(i, s, max(pos, 0)))
        return out, True
    return _align_best_effort(data, content, span), False


def _align_best_effort(data: bytes, content: list[bytes], span: Any) -> list[TokenSpan]:
    """Walk the text; tokens whose bytes are not found next take the gap up to the next match."""
    out: list[TokenSpan | None] = [None] * len(content)
    pos = 0
    pending: list[int] = []

    def settle(upto: int) -> None:
        nonlocal pending
        for n, j in enumerate(pending):
            out[j] = span(j, pos if n == 0 else upto, upto)
        pending = []

    for i, p in enumerate(content):
        if not p:
            out[i] = span(i, pos, pos)
            continue
        stripped = p[1:] if (pos == 0 and p[:1] == b" " and not data.startswith(p)) else p
        found = data.find(stripped, pos) if stripped else pos
        if found < 0:
            pending.append(i)
            continue
        settle(found)
        out[i] = span(i, found, found + len(stripped))
        pos = found + len(stripped)
    settle(len(data))
    return [s for s in out if s is not None]


def cut_points(text: str, spans: Sequence[TokenSpan]) -> set[int]:
    """Character positions between tokens, moved forward past whitespace.

    Moving past whitespace makes ``"▁world"`` (cut before the space) and WordPiece's
    ``"world"`` (cut after it) agree: both cut the text at the start of the word.
    """
    cuts: set[int] = set()
    for s in spans:
        if s.special or s.start == s.end:
            continue
        cuts.add(_skip_space(text, s.start))
        cuts.add(_skip_space(text, s.end))
    cuts.discard(len(text))
    cuts.discard(_skip_space(text, 0))
    return cuts


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def differing_cuts(tokenized: Sequence[TokenizedText]) -> set[int]:
    """Cut positions made by some of the tokenizers but not by all of them."""
    if len(tokenized) < 2:
        return set()
    sets = [cut_points(t.text, t.spans) for t in tokenized]
    union = set().union(*sets)
    common = set.intersection(*sets)
    return union - common


def coverage_groups(spans: Sequence[TokenSpan]) -> list[list[int]]:
    """Indexes of tokens drawn as one box: empty byte tokens join the token after them."""
    groups: list[list[int]] = []
    waiting: list[int] = []
    for i, s in enumerate(spans):
        if s.start == s.end and not s.special:
            waiting.append(i)
            continue
        groups.append(waiting + [i])
        waiting = []
    if waiting:
        groups.append(waiting)
    return groups


def token_summary(tokenized: TokenizedText) -> str:
    """One line for people: '12 tokens, 3.4 characters per token'."""
    n = tokenized.count
    word = "token" if n == 1 else "tokens"
    return f"{n} {word}, {tokenized.chars_per_token:.1f} characters per token"
