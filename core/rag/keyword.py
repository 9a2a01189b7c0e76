"""A keyword index (SQLite FTS5, BM25) kept beside Chroma for hybrid retrieval."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

_SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    source TEXT NOT NULL,
    file_hash TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, content='chunks', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, 'row');
CREATE TABLE IF NOT EXISTS common_terms (term TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_au AFTER UPDATE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    INSERT INTO chunks_fts(rowid, text) VALUES (new.rowid, new.text);
END;
"""

_WORD = re.compile(r"\w+", re.UNICODE)
#: Words that match nearly every chunk: they cost time and add nothing to BM25.
STOPWORDS = frozenset("""a about above after again all am an and any are as at be because been
before being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers him his how i if in into is it its itself just me
more most my no nor not now of off on once only or other our ours out over own same she should so
some such than that the their theirs them then there these they this those through to too under
until up very was we were what when where which while who whom why will with would you your
yours""".split())


MAX_DF_FRACTION = 0.01  # terms in more than 1% of chunks are left to vector search
MIN_DF_LIMIT = 100
MAX_TERMS = 8


def query_terms(text: str, max_terms: int = 16) -> list[str]:
    """The distinct words of ``text`` as FTS5 indexes them, stopwords dropped."""
    import unicodedata

    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    tokens = _WORD.findall(folded)
    content = [w for w in tokens if w not in STOPWORDS] or tokens
    return list(dict.fromkeys(content))[:max_terms]


def fts_query(text: str, max_terms: int = 16) -> str:
    """A safe FTS5 query: the words of ``text`` (stopwords dropped), quoted, joined by OR."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in query_terms(text, max_terms))


class KeywordIndex:
    """BM25 over chunk texts; rows keyed by the same ids as the vectors."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        self._common_ready = False
        with self._lock:
            self._db.executescript(_SCHEMA)

    def upsert(self, ids: Sequence[str], sources: Sequence[str], hashes: Sequence[str],
               texts: Sequence[str]) -> None:
        rows = list(zip(ids, sources, hashes, texts, strict=True))
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO chunks(id, source, file_hash, text) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET source=excluded.source, "
                "file_hash=excluded.file_hash, text=excluded.text "
                "WHERE chunks.text != excluded.text OR chunks.source != excluded.source",
                rows,
            )

    def delete_source(self, source: str, *, keep_hash: str | None = None) -> int:
        """Remove a file's rows (all, or those of other versions than ``keep_hash``)."""
        with self._lock, self._db:
            if keep_hash is None:
                cur = self._db.execute("DELETE FROM chunks WHERE source = ?", (source,))
            else:
                cur = self._db.execute(
                    "DELETE FROM chunks WHERE source = ? AND file_hash != ?", (source, keep_hash)
                )
            return cur.rowcount

    def refresh_common_terms(self) -> int:
        """Remember the words found in most chunks (run after indexing; one vocabulary scan).

        Searching leaves them to vector search: they cost a long posting-list walk and carry
        little signal, while keyword search is for names, codes and rare words.
        """
        with self._lock, self._db:
            n_docs = int(self._db.execute("SELECT IFNULL(MAX(rowid), 0) FROM chunks").fetchone()[0])
            limit = max(MIN_DF_LIMIT, int(n_docs * MAX_DF_FRACTION))
            self._db.execute("DELETE FROM common_terms")
            cur = self._db.execute(
                "INSERT INTO common_terms SELECT term FROM chunks_vocab WHERE doc > ?", (limit,)
            )
            self._common_ready = True
            added = cur.rowcount
        with self._lock:  # fold the write-ahead log in: searches read one file again
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return added

    def _selective_terms(self, terms: list[str]) -> list[str]:
        if not terms:
            return []
        if not self._common_ready:  # an index built before this existed, or never refreshed
            self._common_ready = True
            if self._db.execute("SELECT 1 FROM common_terms LIMIT 1").fetchone() is None:
                self._lock.release()
                try:
                    self.refresh_common_terms()
                finally:
                    self._lock.acquire()
        marks = ",".join("?" * len(terms))
        common = {r[0] for r in self._db.execute(
            f"SELECT term FROM common_terms WHERE term IN ({marks})", terms)}
        return [t for t in terms if t not in common][:MAX_TERMS]

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        """(chunk id, bm25 score: higher is better) of the best ``k`` keyword matches."""
        with self._lock:
            try:
                terms = self._selective_terms(query_terms(query))
            except sqlite3.OperationalError:
                return []
            match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
            if not match:
                return []
            try:
                rows = self._db.execute(
                    "SELECT c.id, bm25(chunks_fts) AS s FROM chunks_fts "
                    "JOIN chunks c ON c.rowid = chunks_fts.rowid "
                    "WHERE chunks_fts MATCH ? ORDER BY s LIMIT ?",
                    (match, k),
                ).fetchall()
            except sqlite3.OperationalError:
                return []
        return [(cid, -float(score)) for cid, score in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def ids_of(self, source: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM chunks WHERE source = ?", (source,)).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
