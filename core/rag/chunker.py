"""Chunking measured in the embedder's own tokens: never over its limit, with overlap,
cut at headings, paragraphs, lines or sentences where the text allows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from core.errors import CorralError
from core.rag.document import UNIT_SEPARATOR, TextUnit


class TokenMeasure(Protocol):
    max_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def token_spans(self, text: str) -> list[tuple[int, int]]: ...


@dataclass(frozen=True)
class ChunkParams:
    """Per knowledge base. ``chunk_tokens`` counts the model's special tokens too."""

    chunk_tokens: int = 256
    overlap_tokens: int = 32

    def validate(self) -> ChunkParams:
        if self.chunk_tokens < 16:
            raise CorralError("chunks must be at least 16 tokens long")
        if not 0 <= self.overlap_tokens <= self.chunk_tokens // 2:
            raise CorralError("the overlap must be between 0 and half the chunk size")
        return self

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ChunkParams:
        return cls(
            chunk_tokens=int(raw.get("chunk_tokens", 256)),
            overlap_tokens=int(raw.get("overlap_tokens", 32)),
        )


@dataclass
class Chunk:
    text: str
    page: int | None
    index: int  # position in its file, 0-based, across pages
    tokens: int  # content tokens (special tokens not counted)
    #: where the chunk lies in its document's text (LoadedDocument.text): text == doc[start:end]
    start: int = 0
    end: int = 0


_HEADING_MD = re.compile(r"#{1,6}\s")
_RST_UNDERLINE = re.compile(r"([=\-~^\"'`#*+_.:])\1{2,}\s*$")
_SENTENCE_END = set(".!?;:")


def _priority(text: str, prev_end: int, start: int) -> int:
    """How good a cut right before the token at ``start`` is (0 = inside a word)."""
    gap = text[prev_end:start]
    if "\n" in gap:
        if gap.count("\n") >= 2:
            line_end = text.find("\n", start)
            line = text[start:] if line_end < 0 else text[start:line_end]
            if _HEADING_MD.match(line):
                return 6
            if line_end >= 0:
                nxt_end = text.find("\n", line_end + 1)
                nxt = text[line_end + 1 :] if nxt_end < 0 else text[line_end + 1 : nxt_end]
                if nxt and _RST_UNDERLINE.match(nxt) and len(nxt.strip()) >= len(line.strip()) > 0:
                    return 6
            return 5
        return 4
    if gap:
        before = text[prev_end - 1] if prev_end > 0 else ""
        return 3 if before in _SENTENCE_END else 2
    before = text[prev_end - 1] if prev_end > 0 else ""
    return 1 if (before and not before.isalnum()) or not text[start].isalnum() else 0


SEGMENT_CHARS = 100_000


def _segments(text: str, size: int) -> Iterator[tuple[int, str]]:
    """(offset, piece) of at most ~``size`` characters, cut at a blank line, line end or space."""
    start = 0
    while len(text) - start > size:
        window = text[start : start + size]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        cut = cut if cut > size // 2 else size
        yield start, text[start : start + cut]
        start += cut
    yield start, text[start:]


class Chunker:
    """Splits text units into chunks of at most ``chunk_tokens`` model tokens."""

    def __init__(self, measure: TokenMeasure, params: ChunkParams | None = None) -> None:
        self.measure = measure
        self.params = (params or ChunkParams()).validate()
        self.special = measure.count_tokens("")  # [CLS] + [SEP] for BERT models
        limit = min(self.params.chunk_tokens, measure.max_tokens)
        self.budget = max(8, limit - self.special)
        self.overlap = min(self.params.overlap_tokens, self.budget // 2)

    def chunk_units(self, units: Iterable[TextUnit]) -> list[Chunk]:
        return list(self.iter_chunks(units))

    def iter_chunks(self, units: Iterable[TextUnit]) -> Iterator[Chunk]:
        """Chunks one at a time; long texts are tokenized in segments (memory stays flat)."""
        index = 0
        base = 0  # where the unit starts in the document's text
        for unit in units:
            for offset, segment in _segments(unit.text, SEGMENT_CHARS):
                for start, end, n_tokens in self.split(segment):
                    yield Chunk(text=segment[start:end], page=unit.page, index=index,
                                tokens=n_tokens, start=base + offset + start,
                                end=base + offset + end)
                    index += 1
            base += len(unit.text) + len(UNIT_SEPARATOR)

    def split(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, content tokens) of the chunks of one piece of text."""
        spans = self.measure.token_spans(text)
        pieces = self._pack(text, spans)
        return self._verify(text, pieces)

    def _pack(self, text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
        n = len(spans)
        if n == 0:
            return []
        if n <= self.budget:
            return [(spans[0][0], spans[-1][1], n)]
        prio = [0] * (n + 1)
        prio[n] = 7
        for k in range(1, n):
            prio[k] = _priority(text, spans[k - 1][1], spans[k][0])
        out: list[tuple[int, int, int]] = []
        i = 0
        while i < n:
            limit = min(n, i + self.budget)
            if limit == n:
                cut = n
            else:
                low = i + max(1, self.budget // 3)
                cut, best = limit, -1
                for k in range(limit, low - 1, -1):
                    if prio[k] > best:
                        cut, best = k, prio[k]
                        if best >= 6:
                            break
            out.append((spans[i][0], spans[cut - 1][1], cut - i))
            if cut >= n:
                break
            i = self._next_start(prio, i, cut)
        return out

    def _next_start(self, prio: list[int], start: int, cut: int) -> int:
        if self.overlap == 0 or prio[cut] >= 5:
            return cut  # a new paragraph or section starts fresh
        lo = max(start + 1, cut - self.overlap)
        best_k, best = cut, -1
        for k in range(lo, cut + 1):
            p = min(prio[k], 4)
            if p > best and p >= 2:
                best_k, best = k, p
        return best_k

    def _verify(self, text: str, pieces: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """Re-measure each piece; split any that a fresh tokenization puts over the limit."""
        limit = self.budget + self.special
        out: list[tuple[int, int, int]] = []
        for start, end, n in pieces:
            real = self.measure.count_tokens(text[start:end])
            if real <= limit:
                out.append((start, end, real - self.special))
                continue
            half = (end - start) // 2
            cut = text.rfind(" ", start, start + half)
            cut = cut if cut > start else start + half
            left_end = start + len(text[start:cut].rstrip())
            right_start = end - len(text[cut:end].lstrip())
            out.extend(self._verify(text, [(start, left_end, n // 2), (right_start, end, n - n // 2)]))
        return [(s, e, n) for s, e, n in out if text[s:e].strip()]
