"""What reading a document yields (text units that keep their page) and the budgets it is read
under. A leaf of core.rag, shared by the loaders and the PDF/DOCX parsing child."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MB = 1024 * 1024


@dataclass
class Limits:
    """Per-file budgets: bytes read, seconds of parsing, characters kept, child memory."""

    max_text_bytes: int = 64 * MB
    max_binary_bytes: int = 256 * MB  # PDF / DOCX file size
    max_seconds: float = 60.0
    max_chars: int = 20_000_000
    max_memory_bytes: int = 2048 * MB
    max_unpacked_bytes: int = 200 * MB  # DOCX: declared uncompressed size
    max_ratio: float = 200.0  # DOCX: declared size / compressed size


#: between two units in a document's text (chunk offsets count it)
UNIT_SEPARATOR = "\n\n"


@dataclass
class TextUnit:
    """A piece of a document that keeps its place: the page (1-based) for PDFs, else None."""

    text: str
    page: int | None = None


@dataclass
class LoadedDocument:
    path: Path
    kind: str  # text, markdown, rst, code, html, csv, pdf, docx
    units: list[TextUnit] = field(default_factory=list)
    #: PDFs: pages in the file, and pages read (fewer when the text budget ran out)
    pages: int = 0
    pages_read: int = 0
    #: what the user should know about an indexed file ("3 of 120 pages have no text")
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The whole text, units joined: chunk offsets (start, end) point into it."""
        return UNIT_SEPARATOR.join(u.text for u in self.units)

    @property
    def chars(self) -> int:
        return sum(len(u.text) for u in self.units)


def too_large(size: int, limit: int) -> str | None:
    """The skip reason for a file of ``size`` bytes under a ``limit``, or None when it fits."""
    if size <= limit:
        return None
    big, cap = size_text(size), size_text(limit)
    if big == cap:  # just over the limit: rounded, both would read "64 MB"
        big, cap = f"{size:,} bytes", f"{limit:,} bytes"
    return f"too large to index ({big}; the limit is {cap})"


def size_text(n: int) -> str:
    if n >= 1024 * MB:
        return f"{n / (1024 * MB):.1f} GB"
    if n >= MB:
        return f"{n / MB:.0f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n} bytes"
