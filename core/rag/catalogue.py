"""The local catalogue of a knowledge base: a cache of which file versions are whole in Chroma.

Chroma is the truth. Every chunk carries its file's ``source`` and ``file_hash``; a file's
first chunk (its *head*) also carries ``size``, ``mtime_ns`` and ``file_chunks`` once the
file was stored whole. ``repair`` checks the cache against those heads when a knowledge base
opens: a record whose vectors are gone is dropped (the file is indexed again), and a file
that is whole in Chroma but missing here (another machine indexed it, or the cache was lost)
gets its record back.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FileRecord:
    source: str  # absolute path
    size: int
    mtime_ns: int
    file_hash: str
    chunks: int
    status: str  # "indexed" or "skipped"
    reason: str = ""
    indexed_at: float = 0.0


class Catalogue:
    """The local SQLite side of a knowledge base: file records, sources, settings."""

    _SCHEMA = """
    PRAGMA journal_mode=WAL;
    CREATE TABLE IF NOT EXISTS files (
        source TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, file_hash TEXT,
        chunks INTEGER, status TEXT, reason TEXT, indexed_at REAL
    );
    CREATE TABLE IF NOT EXISTS sources (root TEXT PRIMARY KEY);
    CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE IF NOT EXISTS excluded (source TEXT PRIMARY KEY);
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(self._SCHEMA)

    def get(self, source: str) -> FileRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM files WHERE source = ?", (source,)).fetchone()
        return FileRecord(*row) if row else None

    def all(self) -> dict[str, FileRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM files").fetchall()
        return {r[0]: FileRecord(*r) for r in rows}

    def put(self, rec: FileRecord) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (rec.source, rec.size, rec.mtime_ns, rec.file_hash, rec.chunks, rec.status,
                 rec.reason, rec.indexed_at),
            )

    def forget(self, source: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM files WHERE source = ?", (source,))

    def clear(self) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM files")

    def add_sources(self, roots: Iterable[str]) -> None:
        with self._lock, self._db:
            self._db.executemany("INSERT OR IGNORE INTO sources VALUES (?)", [(r,) for r in roots])

    def remove_source(self, root: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM sources WHERE root = ?", (root,))

    def sources(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT root FROM sources ORDER BY root")]

    def exclude(self, source: str) -> None:
        """Keep ``source`` out when its folder is indexed again (the user removed it)."""
        with self._lock, self._db:
            self._db.execute("INSERT OR IGNORE INTO excluded VALUES (?)", (source,))

    def include(self, sources: Iterable[str]) -> None:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM excluded WHERE source = ?", [(s,) for s in sources])

    def excluded(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT source FROM excluded")}

    def get_value(self, key: str, default: str = "") -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_value(self, key: str, value: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()


    def carry_from(self, other: Catalogue) -> None:
        """Take the sources, exclusions and values of ``other`` (a rebuild keeps them)."""
        with other._lock:
            roots = [r for (r,) in other._db.execute("SELECT root FROM sources")]
            excluded = [s for (s,) in other._db.execute("SELECT source FROM excluded")]
            values = list(other._db.execute("SELECT key, value FROM kv"))
        with self._lock, self._db:
            self._db.executemany("INSERT OR IGNORE INTO sources VALUES (?)", [(r,) for r in roots])
            self._db.executemany("INSERT OR IGNORE INTO excluded VALUES (?)",
                                 [(s,) for s in excluded])
            self._db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", values)


@dataclass(frozen=True)
class FileHead:
    """One stored version of a file, as its first chunk's metadata describes it."""

    source: str
    file_hash: str
    size: int | None
    mtime_ns: int | None
    chunks: int | None  # None: not known to be whole (still being stored, or older Corral)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> FileHead:
        def number(key: str) -> int | None:
            value = meta.get(key)
            return int(value) if isinstance(value, int | float) else None

        return cls(str(meta.get("source", "")), str(meta.get("file_hash", "")),
                   number("size"), number("mtime_ns"), number("file_chunks"))

    @property
    def whole(self) -> bool:
        return self.chunks is not None and self.size is not None and self.mtime_ns is not None


@dataclass
class Repair:
    dropped: list[str] = field(default_factory=list)  # records whose vectors are not whole
    restored: list[str] = field(default_factory=list)  # records rebuilt from Chroma

    def __bool__(self) -> bool:
        return bool(self.dropped or self.restored)


def repair(catalogue: Catalogue, heads: Iterable[FileHead],
           counts: Mapping[tuple[str, str], int] | None = None) -> Repair:
    """Make the catalogue agree with what Chroma holds.

    ``heads``: every file head in the collection. ``counts``: chunks per (source, file_hash),
    when the caller counted them (it does when the totals disagree); without them a head is
    taken at its word."""
    versions: dict[str, list[FileHead]] = {}
    for head in heads:
        versions.setdefault(head.source, []).append(head)
    out = Repair()

    def stored(head: FileHead, expected: int | None) -> bool:
        return counts is None or expected is None or counts.get(
            (head.source, head.file_hash), 0) == expected

    records = catalogue.all()
    for source, rec in records.items():
        if rec.status != "indexed":
            continue
        match = next((h for h in versions.get(source, []) if h.file_hash == rec.file_hash), None)
        if match is None or not stored(match, rec.chunks):
            catalogue.forget(source)
            out.dropped.append(source)
    kept = catalogue.all()
    for source, heads_of_file in versions.items():
        if source in kept:
            continue
        whole = [h for h in heads_of_file if h.whole and stored(h, h.chunks)]
        if not whole:
            continue
        head = max(whole, key=lambda h: h.mtime_ns or 0)  # a kill between two versions
        catalogue.put(FileRecord(source, head.size or 0, head.mtime_ns or 0, head.file_hash,
                                 head.chunks or 0, "indexed", "", time.time()))
        out.restored.append(source)
    return out
