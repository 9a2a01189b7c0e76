"""The evaluation set: a corpus of chunks, the queries asked of it and what answers them.

Known-item queries are verbatim sentences of the documents; the answer is the sentence's
span in its document, so any chunk whose [start, end) contains the span (or whose text holds
the sentence word for word) is relevant, whatever the chunk size. Labelled queries (a CSV of
query, relevant file or chunk id, grade) and STS pairs (a CSV of a, b, score) are optional.
Everything is drawn with a fixed seed: the same set every run.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import EvaluationInputError

if TYPE_CHECKING:
    from core.rag.knowledge_base import KnowledgeBase

SEED = 0
N_QUERIES = 300
MAX_CHUNKS = 5000
MIN_WORDS, MAX_WORDS = 6, 64
PAIRS = 500  # per class (same document / different documents)
CLUSTER_SAMPLE = 2000
#: a sentence: text up to the next . ! ? or line end
_SENTENCE = re.compile(r"[^\s.!?][^.!?\n]*[.!?]*")


@dataclass(frozen=True)
class Passage:
    """One chunk of the corpus: ``text == document_text[start:end]`` of ``source``."""

    id: str
    text: str
    source: str
    start: int = 0
    end: int = 0


@dataclass(frozen=True)
class Query:
    """A known-item query (``source``, ``start``, ``end``: its span) or a labelled one
    (``labels``: chunk ids or files, with grades)."""

    text: str
    source: str = ""
    start: int = 0
    end: int = 0
    labels: tuple[tuple[str, float], ...] = ()

    @property
    def kind(self) -> str:
        return "labelled" if self.labels else "known-item"


@dataclass
class EvaluationSet:
    corpus: list[Passage]
    queries: list[Query]
    sts: list[tuple[str, str, float]] = field(default_factory=list)
    seed: int = SEED
    notes: list[str] = field(default_factory=list)

    @property
    def documents(self) -> list[str]:
        return sorted({p.source for p in self.corpus})

    def relevance(self) -> np.ndarray:
        """(queries, chunks) grades: 1 for a chunk that holds a known item, the CSV's grade
        for a labelled one, else 0."""
        return relevance(self.queries, self.corpus)

    def document_labels(self) -> np.ndarray:
        index = {s: i for i, s in enumerate(self.documents)}
        return np.array([index[p.source] for p in self.corpus], dtype=np.int64)

    def cluster_sample(self) -> np.ndarray:
        """The chunks clustered (all, or a seeded sample of CLUSTER_SAMPLE), in corpus order."""
        n = len(self.corpus)
        if n <= CLUSTER_SAMPLE:
            return np.arange(n)
        return np.sort(np.random.default_rng(self.seed).choice(n, CLUSTER_SAMPLE, replace=False))

    def chunk_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Seeded chunk pairs (i, j, same document 0/1): up to PAIRS of each kind (all of a
        kind when there are no more)."""
        labels = self.document_labels()
        rng = random.Random(self.seed)
        groups = [g for g in _groups(labels) if len(g) > 1]
        n_same = sum(len(g) * (len(g) - 1) // 2 for g in groups)
        n_other = len(labels) * (len(labels) - 1) // 2 - n_same
        same: set[tuple[int, int]] = set()
        other: set[tuple[int, int]] = set()
        if n_same <= PAIRS:
            same = {(a, b) for g in groups for a, b in combinations(g, 2)}
        while len(same) < min(PAIRS, n_same):
            group = rng.choices(groups, [len(g) ** 2 for g in groups])[0]
            a, b = sorted(rng.sample(group, 2))
            same.add((a, b))
        if n_other <= PAIRS:
            other = {(a, b) for a, b in combinations(range(len(labels)), 2)
                     if labels[a] != labels[b]}
        while len(other) < min(PAIRS, n_other):
            a, b = sorted(rng.sample(range(len(labels)), 2))
            if labels[a] != labels[b]:
                other.add((a, b))
        pairs = sorted(same) + sorted(other)
        first = np.array([p[0] for p in pairs], dtype=np.int64)
        second = np.array([p[1] for p in pairs], dtype=np.int64)
        return first, second, (labels[first] == labels[second]).astype(np.int64)


def _groups(labels: np.ndarray) -> list[list[int]]:
    out: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        out.setdefault(label, []).append(i)
    return list(out.values())


def relevance(queries: list[Query], corpus: list[Passage]) -> np.ndarray:
    grades = np.zeros((len(queries), len(corpus)), dtype=np.float64)
    for q, query in enumerate(queries):
        if query.labels:
            for label, grade in query.labels:
                for c, p in enumerate(corpus):
                    if label in (p.id, p.source) or label == Path(p.source).name:
                        grades[q, c] = max(grades[q, c], grade)
            continue
        for c, p in enumerate(corpus):
            holds_span = p.source == query.source and p.start <= query.start < query.end <= p.end
            if holds_span or query.text in p.text:
                grades[q, c] = 1.0
    return grades


def sentences(text: str) -> Iterable[tuple[int, int, str]]:
    """(start, end, sentence) of each sentence of ``text`` within the word limits."""
    for m in _SENTENCE.finditer(text):
        s = m.group().rstrip()
        if MIN_WORDS <= len(s.split()) <= MAX_WORDS:
            yield m.start(), m.start() + len(s), s


def known_item_queries(pieces: Iterable[tuple[str, int, str]], n: int = N_QUERIES,
                       seed: int = SEED) -> list[Query]:
    """Up to ``n`` sentences of the documents, spread evenly over them, drawn with ``seed``.

    ``pieces``: (source, where the piece starts in its document's text, the piece's text):
    whole documents, or chunks (a sentence in two overlapping chunks is asked once)."""
    found: dict[str, dict[tuple[int, int], str]] = {}
    seen_text: set[str] = set()
    for source, offset, text in pieces:
        for start, end, s in sentences(text):
            found.setdefault(source, {})[(offset + start, offset + end)] = s
    rng = random.Random(seed)
    per_source: list[list[Query]] = []
    for source in sorted(found):
        spans = sorted(found[source])
        rng.shuffle(spans)
        per_source.append([Query(found[source][sp], source, sp[0], sp[1]) for sp in spans])
    out: list[Query] = []
    depth = 0
    while len(out) < n and any(depth < len(qs) for qs in per_source):
        for qs in per_source:
            if depth < len(qs) and len(out) < n and qs[depth].text not in seen_text:
                seen_text.add(qs[depth].text)
                out.append(qs[depth])
        depth += 1
    return out


def _rows(path: Path, columns: int, what: str) -> list[tuple[int, list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(fh), 1)
                    if any(c.strip() for c in row)]
    except FileNotFoundError:
        raise EvaluationInputError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationInputError(f"cannot read {path}: {exc}") from None
    if rows and len(rows[0][1]) >= columns and not _is_number(rows[0][1][columns - 1]):
        rows = rows[1:]  # a header
    if not rows:
        raise EvaluationInputError(f"{path} holds no {what}")
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_labelled(path: Path) -> list[Query]:
    """Queries from a CSV of ``query, relevant file (path or name) or chunk id[, grade]``."""
    hint = "Each line: query, relevant file or chunk id, grade (a number; 1 if left out)."
    labels: dict[str, list[tuple[str, float]]] = {}
    for n, row in _rows(path, 3, "labelled queries"):
        if len(row) < 2 or not row[0] or not row[1]:
            raise EvaluationInputError(f"{path}, line {n}: expected a query and what answers it",
                                       hint=hint)
        grade = row[2] if len(row) > 2 and row[2] else "1"
        if not _is_number(grade) or float(grade) < 0:
            raise EvaluationInputError(f"{path}, line {n}: the grade {grade!r} is not a "
                                       "number of 0 or more", hint=hint)
        labels.setdefault(row[0], []).append((row[1], float(grade)))
    return [Query(q, labels=tuple(ls)) for q, ls in labels.items()]


def read_sts(path: Path) -> list[tuple[str, str, float]]:
    """STS pairs from a CSV of ``a, b, score``."""
    out = []
    for n, row in _rows(path, 3, "STS pairs"):
        if len(row) < 3 or not row[0] or not row[1] or not _is_number(row[2]):
            raise EvaluationInputError(f"{path}, line {n}: expected two texts and a score",
                                       hint="Each line: text a, text b, similarity score.")
        out.append((row[0], row[1], float(row[2])))
    if len(out) < 2:
        raise EvaluationInputError(f"{path}: Spearman needs at least two STS pairs")
    return out


def from_kb(kb: KnowledgeBase, *, n_queries: int = N_QUERIES, seed: int = SEED,
            labelled: Path | None = None, sts: Path | None = None,
            max_chunks: int = MAX_CHUNKS) -> EvaluationSet:
    """The evaluation set of a knowledge base: its chunks (whole documents, at most
    ``max_chunks``), known-item queries drawn from them, and the optional CSV files."""
    by_source: dict[str, list[Passage]] = {}
    for ids, texts, metas, _vectors in kb.iter_chunks(embeddings=False):
        for cid, text, meta in zip(ids, texts, metas, strict=True):
            p = Passage(cid, text or "", str(meta.get("source", "")),
                        int(meta.get("start", 0) or 0), int(meta.get("end", 0) or 0))
            by_source.setdefault(p.source, []).append(p)
    notes: list[str] = []
    sources = sorted(by_source)
    if sum(len(v) for v in by_source.values()) > max_chunks:
        random.Random(seed).shuffle(sources)
        kept: list[str] = []
        total = 0
        for s in sources:
            if total + len(by_source[s]) > max_chunks and kept:
                continue
            kept.append(s)
            total += len(by_source[s])
        notes.append(f"evaluated on {len(kept)} of {len(sources)} documents "
                     f"({total} chunks, the limit is {max_chunks})")
        sources = sorted(kept)
    corpus = [p for s in sources for p in sorted(by_source[s], key=lambda p: (p.start, p.id))]
    if not corpus:
        raise EvaluationInputError(f"knowledge base '{kb.name}' has no chunks to evaluate on",
                                   hint="Index some documents first.")
    queries = known_item_queries(((p.source, p.start, p.text) for p in corpus), n_queries, seed)
    if labelled is not None:
        queries += read_labelled(labelled)
    if not queries:
        raise EvaluationInputError(
            f"the documents of '{kb.name}' have no sentences of {MIN_WORDS}-{MAX_WORDS} words "
            "to use as queries", hint="Give labelled queries with --queries FILE.")
    return EvaluationSet(corpus, queries, read_sts(sts) if sts is not None else [], seed, notes)
