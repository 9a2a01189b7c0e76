"""The keyword side of retrieval: BM25 over the chunk texts, in SQLite beside Chroma.

The chunk texts here are a local cache of what Chroma holds (a knowledge base syncs them
from it). Each chunk's words are counted once, when it is stored; ``refresh`` turns the counts
into precomputed BM25 weights, one posting list per word, so that a search only adds up the
lists of its words. Every word of a query that occurs in the index counts, however common;
only stopwords are left out, on both sides.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.errors import StoreError

#: Names how words() splits text; a change makes refresh() count every chunk again.
TOKENIZER = "words-v1"
K1 = 1.2  # BM25 term-frequency saturation (Lucene's defaults)
B = 0.75  # BM25 length normalisation

_SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    source TEXT NOT NULL,
    file_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    counts BLOB
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE TABLE IF NOT EXISTS terms (id INTEGER PRIMARY KEY, term TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS postings (term INTEGER PRIMARY KEY, docs BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS docs (doc INTEGER PRIMARY KEY, id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value);
INSERT OR IGNORE INTO state VALUES ('changes', 1), ('built', 0), ('docs', 0);
DROP TRIGGER IF EXISTS chunks_ai;
DROP TRIGGER IF EXISTS chunks_ad;
DROP TRIGGER IF EXISTS chunks_au;
DROP TABLE IF EXISTS chunks_vocab;
DROP TABLE IF EXISTS chunks_fts;
DROP TABLE IF EXISTS common_terms;
"""

_WORD = re.compile(r"[^\W_]+")
_ASCII_SEPARATORS = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})
#: Words that match nearly every chunk of any language use and carry no topic.
STOPWORDS = frozenset("""a about above after again all am an and any are as at be because been
before being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers him his how i if in into is it its itself just me
more most my no nor not now of off on once only or other our ours out over own same she should so
some such than that the their theirs them then there these they this those through to too under
until up very was we were what when where which while who whom why will with would you your
yours""".split())


@functools.lru_cache(maxsize=65536)
def _fold(word: str) -> list[str]:
    """A non-ASCII word without diacritics (é -> e) and compatibility forms (ﬁ -> fi)."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
    return _WORD.findall(plain.lower())


def words(text: str) -> list[str]:
    """The words of ``text`` as the index sees them: lower case, no diacritics, split at
    anything that is not a letter or digit (``retry_timeout`` is two words)."""
    if text.isascii():  # the common case, without the (slower) regular expression
        return text.lower().translate(_ASCII_SEPARATORS).split()
    out: list[str] = []
    for w in _WORD.findall(text.lower()):
        if w.isascii():
            out.append(w)
        else:
            out.extend(_fold(w))
    return out


def query_terms(text: str) -> list[str]:
    """The distinct words of ``text`` that a search looks up: all but the stopwords."""
    return list(dict.fromkeys(w for w in words(text) if w not in STOPWORDS))


def word_counts(text: str) -> Counter[str]:
    counts = Counter(words(text))
    for w in STOPWORDS.intersection(counts):
        del counts[w]
    return counts


class KeywordIndex:
    """BM25 over chunk texts; rows keyed by the same ids as the vectors."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._term_ids: dict[str, int] | None = None  # loaded by the first write
        self._numbering = ""  # the state's tokenizer when _term_ids was loaded
        with self._errors("opened"):
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30,
                                       isolation_level=None)
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO state VALUES ('tokenizer', ?)", (TOKENIZER,))
            self._db.execute("PRAGMA mmap_size = 1073741824")  # posting lists read in place
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(chunks)")}
            if "counts" not in columns:  # an index from before counts (SQLite FTS5)
                self._db.execute("ALTER TABLE chunks ADD COLUMN counts BLOB")
                self._db.execute("UPDATE state SET value = value + 1 WHERE key = 'changes'")

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(
                f"the keyword index {self.path} could not be {doing} ({exc})",
                hint="Close other Corral windows; if it persists, re-index the knowledge base.",
            ) from exc

    @contextmanager
    def _transaction(self, doing: str, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One atomic change (taking the write lock first), or one consistent snapshot."""
        with self._lock, self._errors(doing):
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                self._term_ids = None  # it may hold numbers given to words rolled back
                raise
            self._db.execute("COMMIT")

    # --- writes ----------------------------------------------------------------------------

    def _encode(self, db: sqlite3.Connection, counts: list[Counter[str]]) -> list[bytes]:
        """Each chunk's word counts as (term id, count) int32 pairs, new words numbered."""
        numbering = db.execute("SELECT value FROM state WHERE key = 'tokenizer'").fetchone()[0]
        if self._term_ids is None or numbering != self._numbering:  # (renumbered elsewhere)
            self._term_ids = dict(db.execute("SELECT term, id FROM terms"))
            self._numbering = numbering
        ids = self._term_ids
        new = sorted({w for c in counts for w in c if w not in ids})
        if new:
            db.executemany("INSERT OR IGNORE INTO terms(term) VALUES (?)", [(w,) for w in new])
            for start in range(0, len(new), 500):
                part = new[start : start + 500]
                marks = ",".join("?" * len(part))
                ids.update(db.execute(f"SELECT term, id FROM terms WHERE term IN ({marks})", part))
        blobs = []
        for c in counts:
            pairs = np.empty((len(c), 2), dtype=np.int32)
            pairs[:, 0] = list(map(ids.__getitem__, c))
            pairs[:, 1] = list(c.values())
            blobs.append(pairs.tobytes())
        return blobs

    def _changed(self, db: sqlite3.Connection) -> None:
        db.execute("UPDATE state SET value = value + 1 WHERE key = 'changes'")

    def upsert(self, ids: Sequence[str], sources: Sequence[str], hashes: Sequence[str],
               texts: Sequence[str]) -> None:
        counts = [word_counts(t) for t in texts]
        with self._transaction("written") as db:
            before = db.total_changes
            rows = zip(ids, sources, hashes, texts, self._encode(db, counts), strict=True)
            db.executemany(
                "INSERT INTO chunks(id, source, file_hash, text, counts) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET source=excluded.source, "
                "file_hash=excluded.file_hash, text=excluded.text, counts=excluded.counts "
                "WHERE chunks.text != excluded.text OR chunks.source != excluded.source",
                list(rows),
            )
            if db.total_changes != before:
                self._changed(db)

    def delete_source(self, source: str, *, keep_hash: str | None = None) -> int:
        """Remove a file's rows (all, or those of other versions than ``keep_hash``)."""
        with self._transaction("written") as db:
            if keep_hash is None:
                cur = db.execute("DELETE FROM chunks WHERE source = ?", (source,))
            else:
                cur = db.execute("DELETE FROM chunks WHERE source = ? AND file_hash != ?",
                                 (source, keep_hash))
            if cur.rowcount:
                self._changed(db)
            return cur.rowcount

    def delete_ids(self, ids: Iterable[str]) -> int:
        gone = [(cid,) for cid in ids]
        if not gone:
            return 0
        with self._transaction("written") as db:
            db.executemany("DELETE FROM chunks WHERE id = ?", gone)
            self._changed(db)
        return len(gone)

    # --- the BM25 postings -----------------------------------------------------------------

    def refresh(self) -> bool:
        """Turn the stored word counts into BM25 postings if anything changed since the last
        time (an index run does this at its end; a search does it when it finds them stale).
        Returns whether it had to."""
        with self._transaction("refreshed") as db:
            return self._refresh(db)

    @staticmethod
    def _stale(db: sqlite3.Connection) -> bool:
        state = dict(db.execute("SELECT key, value FROM state"))
        return bool(state["built"] != state["changes"] or state["tokenizer"] != TOKENIZER)

    def _refresh(self, db: sqlite3.Connection) -> bool:
        if not self._stale(db):
            return False
        state = dict(db.execute("SELECT key, value FROM state"))
        if state["tokenizer"] != TOKENIZER:  # another way of splitting words: count again
            db.execute("UPDATE chunks SET counts = NULL")
            db.execute("DELETE FROM terms")
            self._term_ids = None
        uncounted = [r for (r,) in db.execute("SELECT rowid FROM chunks WHERE counts IS NULL")]
        for start in range(0, len(uncounted), 2000):
            part = uncounted[start : start + 2000]
            rows = db.execute(f"SELECT rowid, text FROM chunks WHERE rowid IN "
                              f"({','.join('?' * len(part))})", part).fetchall()
            blobs = self._encode(db, [word_counts(text) for _r, text in rows])
            db.executemany("UPDATE chunks SET counts = ? WHERE rowid = ?",
                           [(b, r) for b, (r, _t) in zip(blobs, rows, strict=True)])
        ids: list[str] = []
        lengths: list[int] = []
        joined = bytearray()
        for cid, blob in db.execute("SELECT id, counts FROM chunks ORDER BY rowid"):
            ids.append(cid)
            lengths.append(len(blob) // 8)
            joined += blob
        db.execute("DELETE FROM postings")
        db.executemany("INSERT INTO postings VALUES (?, ?)", _postings(
            np.frombuffer(joined, dtype=np.int32).reshape(-1, 2), np.array(lengths, np.int64)))
        # chunk numbers as of this build: a search reads them with the postings, so it stays
        # consistent while an index run adds or removes chunks
        db.execute("DELETE FROM docs")
        db.executemany("INSERT INTO docs VALUES (?, ?)", enumerate(ids))
        db.executemany("UPDATE state SET value = ? WHERE key = ?", [
            (TOKENIZER, "tokenizer"), (len(ids), "docs"), (state["changes"], "built")])
        return True

    # --- search ----------------------------------------------------------------------------

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        """(chunk id, BM25 score: higher is better) of the best ``k`` keyword matches."""
        terms = query_terms(query)
        if not terms or k <= 0:
            return []
        with self._transaction("searched", write=False) as db:
            found = None if self._stale(db) else self._best_of(db, terms, k)
        if found is None:
            self.refresh()
            with self._transaction("searched", write=False) as db:
                found = self._best_of(db, terms, k)
        return found

    @staticmethod
    def _best_of(db: sqlite3.Connection, terms: list[str], k: int) -> list[tuple[str, float]]:
        n_docs = int(db.execute("SELECT value FROM state WHERE key = 'docs'").fetchone()[0])
        marks = ",".join("?" * len(terms))
        lists = [_unpack(b) for (b,) in db.execute(
            "SELECT p.docs FROM terms t JOIN postings p ON p.term = t.id "
            f"WHERE t.term IN ({marks})", terms)]
        docs, scores = _best(lists, n_docs, k)
        wanted = [int(d) for d in docs]
        marks = ",".join("?" * len(wanted))
        names = dict(db.execute(f"SELECT doc, id FROM docs WHERE doc IN ({marks})",
                                wanted)) if wanted else {}
        return [(names[d], float(s)) for d, s in zip(wanted, scores, strict=True)]

    # --- what it holds ---------------------------------------------------------------------

    def count(self) -> int:
        with self._lock, self._errors("read"):
            return int(self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def ids(self) -> set[str]:
        with self._lock, self._errors("read"):
            return {r[0] for r in self._db.execute("SELECT id FROM chunks")}

    def ids_of(self, source: str) -> list[str]:
        with self._lock, self._errors("read"):
            rows = self._db.execute("SELECT id FROM chunks WHERE source = ?", (source,)).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _postings(pairs: np.ndarray, lengths: np.ndarray) -> Iterator[tuple[int, bytes]]:
    """(term id, its posting list) from every chunk's (term id, count) pairs, chunk after
    chunk (``lengths``: how many pairs each chunk has)."""
    from scipy.sparse import csr_matrix

    n_docs = len(lengths)
    if not len(pairs):
        return
    term = pairs[:, 0]
    tf = pairs[:, 1].astype(np.float32)
    doc = np.repeat(np.arange(n_docs, dtype=np.int32), lengths)
    length = np.bincount(doc, weights=tf, minlength=n_docs).astype(np.float32)
    df = np.bincount(term).astype(np.float64)
    idf = np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)  # never negative
    norm = K1 * (1.0 - B + B * length / (float(length.mean()) or 1.0))
    weight = norm[doc]  # BM25: idf * tf * (k1 + 1) / (tf + norm), in place to spare memory
    weight += tf
    np.divide(tf, weight, out=weight)
    weight *= idf[term]
    weight *= K1 + 1.0
    del doc, tf
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    by_term = csr_matrix((weight, term, indptr), shape=(n_docs, len(df))).tocsc()
    del weight, term
    docs = by_term.indices.astype("<i4", copy=False)  # ascending within each term
    weights = by_term.data.astype("<f4", copy=False)
    bounds = by_term.indptr
    for t in np.flatnonzero(np.diff(bounds)):
        a, b = bounds[t], bounds[t + 1]
        yield int(t), docs[a:b].tobytes() + weights[a:b].tobytes()


def _unpack(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A posting list: its chunk numbers (int32), then their BM25 weights (float32)."""
    n = len(blob) // 8
    return np.frombuffer(blob, "<i4", n), np.frombuffer(blob, "<f4", n, offset=4 * n)


def _best(lists: list[tuple[np.ndarray, np.ndarray]], n_docs: int, k: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best chunks by summed weight (ties: the earlier chunk) and their scores."""
    if not lists or not n_docs:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    scores = np.zeros(n_docs, dtype=np.float32)
    for docs, weights in lists:
        np.add.at(scores, docs, weights)  # (faster than scores[docs] += weights in numpy 2)
    if k < n_docs:
        kth = np.partition(scores, n_docs - k)[n_docs - k]
        above = np.flatnonzero(scores > kth)
        top = np.concatenate((above, np.flatnonzero(scores == kth)[: k - len(above)]))
    else:
        top = np.arange(n_docs)
    top = top[scores[top] > 0]
    top = top[np.lexsort((top, -scores[top]))]
    return top, scores[top]
