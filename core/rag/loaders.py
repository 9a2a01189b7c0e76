"""Document loaders: files -> clean text units (one per PDF page), or a reason to skip.

Text-like files (text, Markdown, reST, code, HTML, CSV) are read here with a size budget;
PDF and DOCX go through ``core.rag.parse_child`` (a child process with a time and memory
limit), so a hostile file costs a "skipped: ..." line, never a hang or the app's memory.
"""

from __future__ import annotations

import csv
import html.parser
import io
import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from core.errors import DocumentUnreadable
from core.rag.document import MB as MB
from core.rag.document import Limits as Limits
from core.rag.document import LoadedDocument as LoadedDocument
from core.rag.document import TextUnit as TextUnit
from core.rag.document import size_text as size_text
from core.rag.document import too_large
from core.rag.parse_child import parse_in_child

#: Folders never walked into when a folder is indexed.
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".tox"}

TEXT_EXTENSIONS = {".txt", ".text", ".log", ".md", ".markdown", ".mdown", ".rst", ".rest", ""}
MARKDOWN_EXTENSIONS = {".md", ".markdown", ".mdown"}
RST_EXTENSIONS = {".rst", ".rest"}
CODE_EXTENSIONS = {
    ".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp",
    ".java", ".kt", ".go", ".rs", ".rb", ".php", ".cs", ".swift", ".scala", ".lua", ".pl",
    ".r", ".jl", ".sh", ".bash", ".zsh", ".ps1", ".sql", ".toml", ".yaml", ".yml", ".ini",
    ".cfg", ".json", ".xml", ".css", ".scss", ".tex", ".m", ".hs", ".ex", ".exs", ".dart",
    ".vue", ".svelte", ".proto", ".cmake", ".mk", ".gradle", ".bat",
}
CODE_FILENAMES = {"makefile", "dockerfile", "cmakelists.txt", "readme", "license", "changelog"}
HTML_EXTENSIONS = {".html", ".htm", ".xhtml"}
CSV_EXTENSIONS = {".csv", ".tsv"}
PDF_EXTENSIONS = {".pdf"}
DOCX_EXTENSIONS = {".docx"}

#: Magic numbers of common binary formats (quick "not a text file" without guessing).
BINARY_MAGIC = (
    b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"PK\x03\x04", b"\x7fELF", b"MZ", b"%PDF",
    b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"7z\xbc\xaf", b"Rar!", b"GGUF", b"SQLite format 3",
    b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe", b"ID3", b"OggS", b"RIFF", b"\x00\x00\x01\x00",
)


def kind_of(path: Path) -> str | None:
    """The loader for a path by its name, or None when Corral does not read that kind."""
    ext = path.suffix.lower()
    if ext in PDF_EXTENSIONS:
        return "pdf"
    if ext in DOCX_EXTENSIONS:
        return "docx"
    if ext in HTML_EXTENSIONS:
        return "html"
    if ext in CSV_EXTENSIONS:
        return "csv"
    if ext in MARKDOWN_EXTENSIONS:
        return "markdown"
    if ext in RST_EXTENSIONS:
        return "rst"
    if ext in CODE_EXTENSIONS or path.name.lower() in CODE_FILENAMES:
        return "code"
    if ext in TEXT_EXTENSIONS:
        return "text"
    return None


def is_supported(path: Path) -> bool:
    return kind_of(path) is not None


def scan(paths: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files under ``paths`` (folders recursively, hidden ones skipped), and missing paths."""
    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw).expanduser().absolute()
        if p.is_file():
            if p not in seen:
                seen.add(p)
                files.append(p)
        elif p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    f = Path(dirpath) / name
                    if f not in seen and f.is_file():
                        seen.add(f)
                        files.append(f)
        else:
            missing.append((str(p), "no such file or folder"))
    return files, missing


# --- cleaning -------------------------------------------------------------------------

_HIDDEN = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e007f\U000e0100-\U000e01ef]"
)
_BLANKS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING = re.compile(r"[ \t]+\n")


def clean_text(text: str) -> str:
    """NFC, newlines unified, zero-width / bidi / control / tag characters removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0b", "\n").replace("\x0c", "\n")
    text = unicodedata.normalize("NFC", text)
    text = _HIDDEN.sub("", text)
    text = _TRAILING.sub("\n", text)
    return _BLANKS.sub("\n\n", text).strip("\n")


# --- encodings --------------------------------------------------------------------------


def decode_bytes(data: bytes, name: str = "") -> str:
    """Decode with BOM detection, then UTF-8, UTF-16 without BOM, cp1252, Latin-1.

    Raises DocumentUnreadable("not a text file") for binary data.
    """
    for bom, codec in (
        (b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise DocumentUnreadable(name, f"broken {codec} text") from exc
    head = data[:8192]
    if head.startswith(BINARY_MAGIC):
        raise DocumentUnreadable(name, "not a text file")
    if b"\x00" in head:
        guess = _utf16_without_bom(head)
        if guess:
            try:
                return data.decode(guess)
            except UnicodeDecodeError:
                pass
        raise DocumentUnreadable(name, "not a text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    if _looks_binary(text[:8192]):
        raise DocumentUnreadable(name, "not a text file")
    return text


def _utf16_without_bom(head: bytes) -> str | None:
    even = head[0::2].count(0)
    odd = head[1::2].count(0)
    half = max(1, len(head) // 2)
    if odd > 0.3 * half and even < 0.05 * half:
        return "utf-16-le"
    if even > 0.3 * half and odd < 0.05 * half:
        return "utf-16-be"
    return None


def _looks_binary(sample: str) -> bool:
    if not sample:
        return False
    bad = sum(1 for c in sample if (ord(c) < 32 and c not in "\n\r\t\f\v") or 0x7F <= ord(c) < 0xA0)
    return bad > max(3, 0.05 * len(sample))


def size_limit(path: Path, limits: Limits) -> int:
    """The largest file of this kind Corral reads: PDF / DOCX, or anything read as text."""
    return limits.max_binary_bytes if kind_of(path) in ("pdf", "docx") else limits.max_text_bytes


def check_size(path: Path, size: int, limits: Limits) -> None:
    """Raise DocumentUnreadable naming the size and the limit, from a stat, before any read."""
    reason = too_large(size, size_limit(path, limits))
    if reason:
        raise DocumentUnreadable(str(path), reason)


def read_text_file(path: Path, limits: Limits) -> str:
    check_size(path, path.stat().st_size, limits)
    with path.open("rb") as fh:
        data = fh.read(limits.max_text_bytes + 1)
    return decode_bytes(data, str(path))


# --- HTML ---------------------------------------------------------------------------------

_SKIP_TAGS = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object"}
_BLOCK_TAGS = {
    "p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header",
    "footer", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "hr", "dt", "dd",
    "title", "main", "nav", "aside", "figure", "figcaption",
}
_VOID_TAGS = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "wbr", "source"}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0", re.I)


class _HtmlText(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[tuple[str, bool]] = []  # (tag, hides its content)
        self.hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        hides = (
            tag in _SKIP_TAGS
            or "hidden" in attr
            or (attr.get("aria-hidden") or "").lower() == "true"
            or bool(_HIDDEN_STYLE.search(attr.get("style") or ""))
        )
        if tag in _VOID_TAGS:
            if tag in ("br", "hr") and not self.hidden_depth:
                self.parts.append("\n")
            return
        self.stack.append((tag, hides))
        if hides:
            self.hidden_depth += 1
        if tag in _BLOCK_TAGS and not self.hidden_depth:
            self.parts.append("\n\n" if tag.startswith("h") or tag == "p" else "\n")
            if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self.parts.append("#" * int(tag[1]) + " ")

    def handle_endtag(self, tag: str) -> None:
        # Close up to the matching tag (HTML in the wild leaves tags unclosed).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for _t, hides in self.stack[i:]:
                    if hides:
                        self.hidden_depth -= 1
                del self.stack[i:]
                break
        if tag in _BLOCK_TAGS and not self.hidden_depth:
            self.parts.append("\n\n" if tag.startswith("h") or tag == "p" else "\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden_depth:
            self.parts.append(data)


def html_to_text(source: str) -> str:
    parser = _HtmlText()
    parser.feed(source)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    return re.sub(r" *\n *", "\n", text)


# --- CSV --------------------------------------------------------------------------------


def csv_to_text(source: str, *, tab: bool = False) -> str:
    """Rows as 'header: value; header: value' lines, so each row reads on its own."""
    sample = source[:20000]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if tab else csv.excel
    reader = csv.reader(io.StringIO(source), dialect)
    rows = [r for r in reader if any(c.strip() for c in r)]
    if not rows:
        return ""
    try:
        has_header = csv.Sniffer().has_header(sample)
    except csv.Error:
        has_header = False
    if not has_header:
        return "\n".join("; ".join(c.strip() for c in r) for r in rows)
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(rows[0])]
    lines = ["; ".join(header)]
    for row in rows[1:]:
        cells = [
            f"{header[i] if i < len(header) else f'column {i + 1}'}: {c.strip()}"
            for i, c in enumerate(row) if c.strip()
        ]
        lines.append("; ".join(cells))
    return "\n".join(lines)


# --- the entry point ---------------------------------------------------------------------


def load_document(path: Path, limits: Limits | None = None) -> LoadedDocument:
    """Read ``path`` into clean text units, or raise DocumentUnreadable with the reason."""
    limits = limits or Limits()
    kind = kind_of(path)
    if kind is None:
        raise DocumentUnreadable(str(path), f"not a supported document type ({path.suffix or 'no extension'})")
    try:
        if not path.is_file():
            raise DocumentUnreadable(str(path), "not a file")
        check_size(path, path.stat().st_size, limits)
        parsed: LoadedDocument | None = None
        if kind in ("pdf", "docx"):
            parsed = parse_in_child(path, kind, limits)
            units = parsed.units
        else:
            raw = read_text_file(path, limits)
            if kind == "html":
                raw = html_to_text(raw)
            elif kind == "csv":
                raw = csv_to_text(raw, tab=path.suffix.lower() == ".tsv")
            units = [TextUnit(raw[: limits.max_chars])]
    except OSError as exc:
        raise DocumentUnreadable(str(path), f"cannot read the file ({exc.strerror or exc})") from exc
    cleaned = [TextUnit(clean_text(u.text), u.page) for u in units]
    cleaned = [u for u in cleaned if u.text.strip()]
    doc = LoadedDocument(path=path, kind=kind, units=cleaned)
    if parsed is not None and parsed.pages:
        doc.pages, doc.pages_read = parsed.pages, parsed.pages_read
        doc.notes = page_notes(doc)
    return doc


def page_notes(doc: LoadedDocument) -> list[str]:
    """What a user should know about a PDF's pages: those with no text, those never read."""
    notes = []
    read = doc.pages_read or doc.pages
    with_text = {u.page for u in doc.units if u.page is not None}
    blank = read - len(with_text)
    if blank > 0:
        verb = "has" if blank == 1 else "have"
        notes.append(f"{blank} of {doc.pages} pages {verb} no text")
    if read < doc.pages:
        notes.append(f"only the first {read} of {doc.pages} pages were read (text limit reached)")
    return notes
