"""The keyword index a user relies on for names, codes and plain words: every query word that
occurs in the chunks counts, however common; stopwords are the only words left out."""

from __future__ import annotations

import random
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.rag.keyword import KeywordIndex, query_terms, words

COMMON = ("river mountain forest cloud stone light ocean paper window garden music library "
          "engine bridge harbor").split()
BOTH = 1234  # the one chunk that holds both "python" and "timeout"


def common_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """``n`` chunks of common words (each in most chunks); "python" in every fifth chunk,
    "timeout" in every fifth other one (400 each: far above 1% and 100), both only in one."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        body = [rng.choice(COMMON) for _ in range(30)]
        if i % 5 == 1:
            body.insert(7, "python")
        if i % 5 == 2:
            body.insert(7, "timeout")
        if i == BOTH:
            body[3:3] = ["the", "python", "client", "hit", "a", "timeout"]
        texts.append(" ".join(body) + ".")
    return texts


def build(path: Path, texts: list[str], *, source: str = "/docs/f.txt") -> KeywordIndex:
    index = KeywordIndex(path)
    ids = [f"c{i}" for i in range(len(texts))]
    index.upsert(ids, [source] * len(ids), ["h1"] * len(ids), texts)
    return index


@pytest.fixture(scope="module")
def common(tmp_path_factory: pytest.TempPathFactory):
    index = build(tmp_path_factory.mktemp("kw") / "keywords.sqlite3", common_corpus())
    index.refresh()
    yield index
    index.close()


def test_two_common_words_find_the_one_chunk_that_holds_both(common: KeywordIndex) -> None:
    hits = common.search("python timeout", 10)
    assert hits[0][0] == f"c{BOTH}"
    assert hits[0][1] > hits[1][1] > 0  # BM25: higher is better, and both words beat one


def test_a_query_of_only_common_words_gets_keyword_hits(common: KeywordIndex) -> None:
    hits = common.search("river harbor", 50)
    assert len(hits) == 50
    texts = dict(zip((f"c{i}" for i in range(2000)), common_corpus(), strict=True))
    # the chunks that say the words most often come first
    def mentions(cid: str) -> int:
        return sum(w in ("river", "harbor") for w in texts[cid].split())

    assert mentions(hits[0][0]) > mentions(hits[-1][0])


def test_stopwords_are_the_only_words_dropped(tmp_path: Path) -> None:
    index = build(tmp_path / "k.sqlite3", [
        "The pump fails with error 42 at x = 7.",
        "Replacement part ZX-4471Q fits the housing.",
        "It is what it is.",
    ])
    assert query_terms("What is the error of the pump?") == ["error", "pump"]
    assert index.search("the of is it", 5) == []  # only stopwords: nothing to look up
    assert [cid for cid, _s in index.search("42", 5)] == ["c0"]
    assert [cid for cid, _s in index.search("x", 5)] == ["c0"]  # one letter is a word too
    assert [cid for cid, _s in index.search("zx-4471q", 5)] == ["c1"]
    assert index.search("the pump", 5) == index.search("pump", 5)


def test_words_are_folded_and_split_as_people_expect(tmp_path: Path) -> None:
    assert words("Café_Timeout naïve ﬁle RETRY-after") == [
        "cafe", "timeout", "naive", "file", "retry", "after"]
    index = build(tmp_path / "k.sqlite3", ["Le café est fermé.", "retry_timeout = 30"])
    assert [cid for cid, _s in index.search("cafe", 5)] == ["c0"]
    assert [cid for cid, _s in index.search("FERME", 5)] == ["c0"]
    assert [cid for cid, _s in index.search("timeout", 5)] == ["c1"]


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_ascii_words_split_exactly_like_the_unicode_rule(text: str) -> None:
    assert words(text) == re.findall(r"[^\W_]+", text.lower())


def test_new_and_removed_chunks_are_searched_without_a_manual_refresh(tmp_path: Path) -> None:
    index = build(tmp_path / "k.sqlite3", ["the lighthouse log", "a harbor chart"])
    assert [c for c, _s in index.search("lighthouse", 5)] == ["c0"]
    index.upsert(["n1"], ["/docs/new.txt"], ["h2"], ["a second lighthouse"])
    assert {c for c, _s in index.search("lighthouse", 5)} == {"c0", "n1"}
    assert index.delete_source("/docs/new.txt") == 1
    assert [c for c, _s in index.search("lighthouse", 5)] == ["c0"]
    assert index.refresh() is False  # the search already brought the postings up to date


def test_a_second_connection_sees_what_the_first_wrote(tmp_path: Path) -> None:
    writer = build(tmp_path / "k.sqlite3", ["copper wire"])
    reader = KeywordIndex(tmp_path / "k.sqlite3")
    assert [c for c, _s in reader.search("copper", 5)] == ["c0"]
    writer.upsert(["c1"], ["/docs/g.txt"], ["h"], ["copper pipe"])
    assert {c for c, _s in reader.search("copper", 5)} == {"c0", "c1"}
    writer.close()
    reader.close()


def test_dropping_ids_takes_their_words_out_of_the_index(tmp_path: Path) -> None:
    index = build(tmp_path / "k.sqlite3", ["stale chunk about violins", "kept chunk"])
    assert index.ids() == {"c0", "c1"}
    assert index.delete_ids(["c0"]) == 1
    index.upsert(["c9"], ["/docs/b.txt"], ["h2"], ["new chunk about violins"])
    assert index.count() == 2
    assert [c for c, _s in index.search("violins", 5)] == ["c9"]
    assert index.ids_of("/docs/b.txt") == ["c9"]


OLD_SCHEMA = """
CREATE TABLE chunks (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, source TEXT NOT NULL,
    file_hash TEXT NOT NULL, text TEXT NOT NULL);
CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='rowid');
CREATE VIRTUAL TABLE chunks_vocab USING fts5vocab(chunks_fts, 'row');
CREATE TABLE common_terms (term TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.rowid, new.text);
END;
INSERT INTO chunks(id, source, file_hash, text) VALUES
    ('a', '/d/a.txt', 'h', 'python timeout in the client'), ('b', '/d/b.txt', 'h', 'python');
INSERT INTO common_terms VALUES ('python'), ('timeout');
"""


def test_an_index_from_the_fts5_version_keeps_its_chunks_and_searches_every_word(
        tmp_path: Path) -> None:
    path = tmp_path / "keywords.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    index = KeywordIndex(path)
    assert index.count() == 2
    assert [c for c, _s in index.search("python timeout", 5)] == ["a", "b"]
    index.upsert(["c"], ["/d/c.txt"], ["h"], ["a timeout again"])  # no FTS5 trigger left behind
    assert {c for c, _s in index.search("timeout", 5)} == {"a", "c"}
    index.close()
