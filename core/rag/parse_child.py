"""PDF and DOCX parsing in a child process with a time and a memory limit.

A hostile or broken file (endless PDF, zip bomb, XML bomb) can at worst cost the child,
which is killed and restarted; the caller gets DocumentUnreadable with a reason. Run as
``python -m core.rag.parse_child``: JSON requests on stdin, JSON answers on stdout.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import IO, Any

from core.errors import DocumentUnreadable
from core.rag.document import MB, Limits, LoadedDocument, TextUnit, size_text, too_large


class _Unreadable(Exception):
    """Raised inside the child; its message is the reason shown to the user."""


# --- parsers (run inside the child) -----------------------------------------------------------


def parse_pdf(path: Path, limits: Limits) -> tuple[list[tuple[str, int]], int, int]:
    """Text units (text, page), the number of pages, and how many of them were read."""
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    big = too_large(path.stat().st_size, limits.max_binary_bytes)
    if big:
        raise _Unreadable(big)
    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted:
            try:
                opened = int(reader.decrypt(""))
            except Exception:
                opened = 0
            if not opened:
                raise _Unreadable("encrypted PDF")
        pages = reader.pages
        n_pages = len(pages)
    except _Unreadable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise _Unreadable(f"damaged PDF ({exc})") from exc
    if n_pages == 0:
        raise _Unreadable("damaged PDF (no pages)")
    deadline = time.monotonic() + limits.max_seconds
    units: list[tuple[str, int]] = []
    chars = 0
    images = 0
    read = 0
    for number in range(n_pages):
        if time.monotonic() > deadline:
            raise _Unreadable(f"took longer than {limits.max_seconds:.0f} s to read")
        read = number + 1
        try:
            page = pages[number]
            text = page.extract_text() or ""
        except Exception as exc:  # one bad page should not cost the others
            if not units and number == n_pages - 1:
                raise _Unreadable(f"damaged PDF ({exc})") from exc
            continue
        if text.strip():
            units.append((text, number + 1))
            chars += len(text)
            if chars > limits.max_chars:
                break
        else:
            images += _count_images(page)
    if not units:
        if images:
            raise _Unreadable("scanned PDF: no text layer")
        raise _Unreadable("no text in this PDF")
    return units, n_pages, read


def _count_images(page: Any) -> int:
    try:
        resources: Any = page.get("/Resources")
        if resources is None:
            return 0
        xobjects: Any = resources.get_object().get("/XObject")
        if xobjects is None:
            return 0
        xobjects = xobjects.get_object()
        return sum(1 for ref in xobjects.values() if ref.get_object().get("/Subtype") == "/Image")
    except Exception:
        return 0


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def parse_docx(path: Path, limits: Limits) -> list[tuple[str, int | None]]:
    import xml.etree.ElementTree as ET

    big = too_large(path.stat().st_size, limits.max_binary_bytes)
    if big:
        raise _Unreadable(big)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _Unreadable("damaged DOCX (not a zip archive)") from exc
    with archive:
        try:
            info = archive.getinfo("word/document.xml")
        except KeyError as exc:
            raise _Unreadable("not a Word document (no word/document.xml)") from exc
        declared = sum(i.file_size for i in archive.infolist())
        ratio = info.file_size / max(1, info.compress_size)
        if declared > limits.max_unpacked_bytes or (info.file_size > 10 * MB and ratio > limits.max_ratio):
            raise _Unreadable(
                f"zip bomb: it declares {size_text(declared)} unpacked from "
                f"{size_text(path.stat().st_size)}"
            )
        try:
            with archive.open(info) as fh:
                data = fh.read(limits.max_unpacked_bytes + 1)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            raise _Unreadable(f"damaged DOCX ({exc})") from exc
    if len(data) > limits.max_unpacked_bytes:
        raise _Unreadable("zip bomb: it unpacks to more than its declared size")
    head = data[:4096]
    if b"<!DOCTYPE" in head or b"<!ENTITY" in data:
        raise _Unreadable("unsafe DOCX (XML entity declarations)")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise _Unreadable(f"damaged DOCX ({exc})") from exc
    paragraphs: list[str] = []
    for para in root.iter(f"{_W}p"):
        style = ""
        ppr = para.find(f"{_W}pPr/{_W}pStyle")
        if ppr is not None:
            style = ppr.get(f"{_W}val", "")
        parts: list[str] = []
        for node in para.iter():
            if node.tag == f"{_W}t" and node.text:
                parts.append(node.text)
            elif node.tag == f"{_W}tab":
                parts.append("\t")
            elif node.tag in (f"{_W}br", f"{_W}cr"):
                parts.append("\n")
        text = "".join(parts).strip()
        if not text:
            continue
        low = style.lower()
        if low.startswith("heading") and low[7:].isdigit():
            text = "#" * min(6, int(low[7:])) + " " + text
        elif low == "title":
            text = "# " + text
        paragraphs.append(text)
    return [("\n\n".join(paragraphs), None)] if paragraphs else []


def _serve() -> None:
    """Child main loop: one JSON request per line, one JSON answer per line."""
    limit = int(os.environ.get("CORRAL_PARSE_MEMORY", "0"))
    if limit > 0:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass
    out = sys.stdout
    for line in sys.stdin:
        try:
            req = json.loads(line)
            limits = Limits(**req["limits"])
            path = Path(req["path"])
            answer: dict[str, Any]
            if req["kind"] == "pdf":
                units, pages, read = parse_pdf(path, limits)
                answer = {"units": units, "pages": pages, "pages_read": read}
            else:
                answer = {"units": parse_docx(path, limits)}
        except _Unreadable as exc:
            answer = {"error": str(exc)}
        except MemoryError:
            answer = {"error": "needs too much memory to read"}
        except RecursionError:
            answer = {"error": "damaged file (nested too deeply)"}
        except Exception as exc:
            answer = {"error": f"cannot read it ({type(exc).__name__}: {exc})"}
        out.write(json.dumps(answer, ensure_ascii=False) + "\n")
        out.flush()


# --- the parent side ----------------------------------------------------------------------------


class ParseChild:
    """A supervised parser child: requests are serialised; a hung child is killed."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._buffer = b""

    def _start(self, limits: Limits) -> subprocess.Popen[bytes]:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        env["CORRAL_PARSE_MEMORY"] = str(limits.max_memory_bytes)
        self._buffer = b""
        return subprocess.Popen(
            [sys.executable, "-m", "core.rag.parse_child"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )

    def parse(self, path: Path, kind: str, limits: Limits) -> LoadedDocument:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start(limits)
            proc = self._proc
            request = {"path": str(path), "kind": kind, "limits": limits.__dict__}
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
                proc.stdin.flush()
                line = self._read_line(proc.stdout, time.monotonic() + limits.max_seconds * 1.5 + 2)
            except (BrokenPipeError, OSError):
                line = None
            if line is None:
                timed_out = proc.poll() is None
                self.close_locked()
                reason = (
                    f"took longer than {limits.max_seconds:.0f} s to read" if timed_out
                    else "the document reader crashed on this file"
                )
                raise DocumentUnreadable(str(path), reason)
        answer = json.loads(line)
        if "error" in answer:
            raise DocumentUnreadable(str(path), answer["error"])
        units = [TextUnit(text, page) for text, page in answer["units"]]
        return LoadedDocument(path=path, kind=kind, units=units, pages=int(answer.get("pages", 0)),
                              pages_read=int(answer.get("pages_read", 0)))

    def _read_line(self, stream: IO[bytes], deadline: float) -> bytes | None:
        fd = stream.fileno()
        # a selector, not select.select: that one fails on descriptors past 1024, which a
        # long-running window can reach
        with selectors.DefaultSelector() as waiting:
            waiting.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if not waiting.select(min(left, 1.0)):
                    continue
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return None
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def close_locked(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()

    def close(self) -> None:
        with self._lock:
            self.close_locked()


_child: ParseChild | None = None
_child_lock = threading.Lock()


def parse_in_child(path: Path, kind: str, limits: Limits) -> LoadedDocument:
    global _child
    with _child_lock:
        if _child is None:
            _child = ParseChild()
            atexit.register(_child.close)
        child = _child
    return child.parse(path, kind, limits)


if __name__ == "__main__":
    _serve()
