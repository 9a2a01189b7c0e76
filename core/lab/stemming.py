"""Stemming vs lemmatization, and what stemming does to keyword search.

A stem is what the Snowball (Porter 2) English stemmer (PyStemmer) leaves of a word: a cut,
not always a word (happily -> happili). A lemma is the dictionary form, from simplemma's
English data (better -> good). simplemma takes no part of speech, so ``pos`` works through a
small table of irregular comparatives and superlatives (``GRADES``): as an adjective 'better'
is 'good', as an adverb 'well', and as a noun or verb it stays 'better'; every other word gets
simplemma's best guess whatever the part of speech.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.errors import Cancelled, CorralError
from core.rag.keyword import STOPWORDS, KeywordIndex, words

POS = ("adj", "noun", "verb", "adv")

#: irregular grades: word -> (lemma as an adjective, lemma as an adverb)
GRADES: dict[str, tuple[str, str]] = {
    "better": ("good", "well"), "best": ("good", "well"),
    "worse": ("bad", "badly"), "worst": ("bad", "badly"),
    "more": ("many", "much"), "most": ("many", "much"),
    "less": ("little", "little"), "least": ("little", "little"),
    "further": ("far", "far"), "furthest": ("far", "far"),
    "farther": ("far", "far"), "farthest": ("far", "far"),
    "elder": ("old", "old"), "eldest": ("old", "old"),
}


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def stem(word: str) -> str:
    return str(_stemmer().stemWord(word.lower()))


def lemma(word: str, pos: str | None = None) -> str:
    import simplemma

    if pos is not None and pos not in POS:
        raise CorralError(f"unknown part of speech {pos!r}", hint=f"Use one of: {', '.join(POS)}.")
    low = word.lower()
    if pos is not None and low in GRADES:
        adj, adv = GRADES[low]
        return {"adj": adj, "adv": adv}.get(pos, low)
    return str(simplemma.lemmatize(low, lang="en"))


@dataclass
class StemRow:
    word: str
    stem: str
    lemma: str


def stem_and_lemma(words_: list[str], pos: str | None = None) -> list[StemRow]:
    if not words_:
        raise CorralError("give at least one word")
    return [StemRow(w, stem(w), lemma(w, pos)) for w in words_]


# --- keyword recall with and without stemming ------------------------------------------------


def stemmed_text(text: str) -> str:
    """The text as the stemmed index sees it: the keyword index's words, stopwords out, each
    word stemmed (stopwords go first, as they would in the plain index)."""
    return " ".join(stem(w) for w in words(text) if w not in STOPWORDS)


@dataclass
class Query:
    text: str
    target: int  # the chunk it was made from
    replaced: int  # words given in another form than the chunk's


@dataclass
class RecallResult:
    k: int
    queries: list[Query]
    plain_hits: int
    stemmed_hits: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def plain_recall(self) -> float:
        return self.plain_hits / len(self.queries)

    @property
    def stemmed_recall(self) -> float:
        return self.stemmed_hits / len(self.queries)

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "queries": len(self.queries), "plain_recall": self.plain_recall,
                "stemmed_recall": self.stemmed_recall, "examples": self.examples}


def generate_queries(chunks: list[str], n: int = 100, seed: int = 0, per_query: int = 3
                     ) -> list[Query]:
    """Queries a person might type for a chunk: ``per_query`` of its content words, each given
    in a form the text uses elsewhere but this chunk does not (indexing -> indexes); chunks
    without such words give no query."""
    forms: dict[str, set[str]] = {}
    chunk_words: list[list[str]] = []
    for text in chunks:
        content = sorted({w for w in words(text) if w not in STOPWORDS and len(w) > 3 and w.isalpha()})
        chunk_words.append(content)
        for w in content:
            forms.setdefault(stem(w), set()).add(w)
    rng = random.Random(seed)
    order = list(range(len(chunks)))
    rng.shuffle(order)
    out: list[Query] = []
    for c in order:
        own = set(chunk_words[c])
        other_forms = {stem(w): sorted(forms[stem(w)] - own) for w in own}
        variable = sorted({s for s, o in other_forms.items() if o})
        if not variable:
            continue
        picked = rng.sample(variable, min(per_query, len(variable)))
        out.append(Query(" ".join(rng.choice(other_forms[s]) for s in picked), c, len(picked)))
        if len(out) >= n:
            break
    if not out:
        raise CorralError("no chunk holds a word that the text also uses in another form",
                          hint="Use a larger knowledge base.")
    return out


def keyword_recall(chunks: list[str], *, queries: int = 100, k: int = 5, seed: int = 0,
                   progress: Callable[[float, str], None] | None = None,
                   cancelled: Callable[[], bool] | None = None) -> RecallResult:
    """Recall@k of BM25 (core.rag.keyword) on generated queries, over the plain words and over
    their stems: how often the chunk a query was made from comes back in the top ``k``."""
    if not chunks:
        raise CorralError("the knowledge base holds no chunks")
    qs = generate_queries(chunks, queries, seed)
    ids = [str(n) for n in range(len(chunks))]
    with tempfile.TemporaryDirectory(prefix="corral-lab-") as tmp:
        hits = []
        for n, (name, convert) in enumerate((("plain", None), ("stemmed", stemmed_text))):
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled")
            if progress is not None:
                progress(n / 2, f"BM25 on {name} words")
            index = KeywordIndex(Path(tmp) / f"{name}.sqlite3")
            try:
                texts = chunks if convert is None else [convert(t) for t in chunks]
                index.upsert(ids, ["lab"] * len(ids), [""] * len(ids), texts)
                index.refresh()
                found = [[int(i) for i, _s in index.search(
                    q.text if convert is None else convert(q.text), k)] for q in qs]
            finally:
                index.close()
            hits.append(found)
    plain = sum(q.target in f for q, f in zip(qs, hits[0], strict=True))
    stemmed = sum(q.target in f for q, f in zip(qs, hits[1], strict=True))
    examples = [{"query": q.text, "chunk": chunks[q.target][:200], "plain_hit": q.target in a,
                 "stemmed_hit": q.target in b}
                for q, a, b in list(zip(qs, hits[0], hits[1], strict=True))[:10]]
    return RecallResult(k, qs, plain, stemmed, examples)
