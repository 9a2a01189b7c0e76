"""Evaluations end to end: the evaluation set (known items drawn with a fixed seed, labels
that survive a change of chunk size, the CSV files and their errors), the baselines (random
near chance, BM25 above it), repeatability, and a real knowledge base through the CLI.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from core.errors import CorralError, EvaluationInputError
from core.evaluate.contestants import contestants
from core.evaluate.dataset import (
    EvaluationSet,
    Passage,
    known_item_queries,
    read_labelled,
    read_sts,
    relevance,
)
from core.evaluate.run import evaluate
from tests.fixtures.documents import minilm_embedder

__all__ = ["minilm_embedder"]

TOPICS = {
    "kitchen": "flour oven butter dough yeast knead bake crust sugar whisk recipe kitchen",
    "space": "planet orbit telescope comet galaxy star moon rocket astronaut gravity nebula",
    "sea": "ocean wave harbor sailor anchor boat tide fish coral reef lighthouse ship",
    "music": "violin melody chord rhythm orchestra piano singer concert tempo note song",
    "garden": "tomato soil seed flower rose weed compost shovel garden tulip hedge bloom",
    "law": "court judge lawyer contract verdict trial witness statute appeal jury evidence",
    "health": "doctor nurse patient fever clinic vaccine medicine surgery heart blood pulse",
    "school": "teacher pupil lesson homework exam classroom chalk grade lecture library",
    "sport": "football goal referee stadium team match coach runner sprint medal trophy",
    "money": "bank loan interest coin budget invoice tax salary market stock price",
}
FILLER = "the a of and with under over near then often every".split()


def topical_documents(n_docs: int = 10, sentences: int = 30, seed: int = 7) -> dict[str, str]:
    """Documents on distinct topics: sentences of ten words, six from the topic."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    docs = {}
    for d in range(n_docs):
        vocab = TOPICS[names[d % len(names)]].split()
        out = []
        for _ in range(sentences):
            words = rng.choices(vocab, k=6) + rng.choices(FILLER, k=4)
            rng.shuffle(words)
            out.append(" ".join(words).capitalize() + ".")
        docs[f"/docs/{names[d % len(names)]}-{d}.txt"] = " ".join(out)
    return docs


def chunked(docs: dict[str, str], per_chunk: int = 5) -> list[Passage]:
    """Chunks of ``per_chunk`` sentences, with their offsets (as the indexer stores them)."""
    out = []
    for source, text in docs.items():
        starts = [0] + [i + 2 for i in range(len(text)) if text.startswith(". ", i)]
        for n in range(0, len(starts), per_chunk):
            a = starts[n]
            b = starts[n + per_chunk] - 1 if n + per_chunk < len(starts) else len(text)
            out.append(Passage(f"{source}#{n}", text[a:b], source, a, b))
    return out


def topical_set(n_queries: int = 200, seed: int = 0, **kw: int) -> EvaluationSet:
    docs = topical_documents(**kw)
    queries = known_item_queries(((s, 0, t) for s, t in docs.items()), n_queries, seed)
    return EvaluationSet(chunked(docs), queries, seed=seed)


# --- the evaluation set -------------------------------------------------------------------


def test_known_item_queries_are_verbatim_spans_drawn_with_a_fixed_seed():
    docs = topical_documents()
    first = known_item_queries(((s, 0, t) for s, t in docs.items()), 50, seed=0)
    again = known_item_queries(((s, 0, t) for s, t in docs.items()), 50, seed=0)
    other = known_item_queries(((s, 0, t) for s, t in docs.items()), 50, seed=1)
    assert first == again and first != other
    assert all(docs[q.source][q.start:q.end] == q.text for q in first)
    assert len({q.source for q in first}) == len(docs)  # spread over every document


def test_labels_survive_a_change_of_chunk_size():
    docs = topical_documents(n_docs=3)
    queries = known_item_queries(((s, 0, t) for s, t in docs.items()), 40)
    for per_chunk in (2, 5, 11):
        corpus = chunked(docs, per_chunk)
        grades = relevance(queries, corpus)
        for q, row in zip(queries, grades, strict=True):
            holders = [p for p, g in zip(corpus, row, strict=True) if g]
            assert holders and all(q.text in p.text for p in holders)


def test_queries_taken_from_overlapping_chunks_are_asked_once():
    text = "Stone bridges cross the wide river here. Boats pass under them every day."
    pieces = [("a.txt", 0, text[:40]), ("a.txt", 0, text), ("a.txt", 41, text[41:])]
    got = known_item_queries(pieces, 10)
    assert sorted(q.text for q in got) == sorted(text.split(". ", 1)[0:1]
                                                 + [text.split(". ", 1)[1]]) or len(got) == 2
    assert len(got) == 2


def test_labelled_queries_name_files_or_chunks_with_grades(tmp_path: Path):
    csv = tmp_path / "labels.csv"
    csv.write_text("query,relevant,grade\nwhere do ships dock,/docs/sea-2.txt,2\n"
                   "where do ships dock,c9,1\nhow to bake,kitchen-1.txt\n", encoding="utf-8")
    queries = read_labelled(csv)
    corpus = [Passage("c1", "x", "/docs/sea-2.txt"), Passage("c9", "y", "/docs/law-5.txt"),
              Passage("c3", "z", "/docs/kitchen-1.txt")]
    assert [q.kind for q in queries] == ["labelled", "labelled"]
    assert relevance(queries, corpus).tolist() == [[2, 1, 0], [0, 0, 1]]


@pytest.mark.parametrize("content, words", [
    ("query,relevant,grade\nships,sea.txt,high\n", "line 2"),
    ("just one column\n", "line 1"),
    ("query,relevant,grade\n", "holds no labelled queries"),
])
def test_a_bad_labelled_file_is_a_clear_error(tmp_path: Path, content: str, words: str):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvaluationInputError, match=words) as info:
        read_labelled(path)
    assert isinstance(info.value, CorralError)


def test_sts_files_are_read_and_checked(tmp_path: Path):
    good = tmp_path / "sts.csv"
    good.write_text("a,b,score\nA cat sits.,A cat is sitting.,4.5\nA cat.,The stock market.,0\n",
                    encoding="utf-8")
    assert read_sts(good) == [("A cat sits.", "A cat is sitting.", 4.5),
                              ("A cat.", "The stock market.", 0.0)]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,score\nx,y,1\nx,y,very\n", encoding="utf-8")
    with pytest.raises(EvaluationInputError, match="line 3"):
        read_sts(bad)
    with pytest.raises(EvaluationInputError, match="no such file"):
        read_sts(tmp_path / "missing.csv")


# --- the baselines ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baselines():
    data = topical_set()
    return data, evaluate(data, contestants([], seed=0))


def test_random_vectors_score_near_chance_and_bm25_beats_them(baselines):
    data, result = baselines
    rand, bm25, tfidf = result.score("random"), result.score("bm25"), result.score("tfidf")
    n = len(data.corpus)
    # a random order finds on average 10/n of a query's relevant chunks in its top 10
    assert rand.recall_at_10 == pytest.approx(10 / n, abs=0.05)
    same = data.chunk_pairs()[2]
    assert rand.pair_ap == pytest.approx(same.mean(), abs=0.1)  # chance: the share of positives
    assert bm25.ndcg_at_10 > rand.ndcg_at_10 + 0.3
    assert tfidf.ndcg_at_10 > rand.ndcg_at_10 + 0.3
    assert tfidf.v_measure > 0.8 > rand.v_measure + 0.4  # the topics' words cluster them
    assert result.recommendation in ("bm25", "tfidf") and "keyword" in result.reason


def test_two_runs_with_the_same_seed_give_the_same_numbers(baselines):
    _data, first = baselines
    second = evaluate(topical_set(), contestants([], seed=0))
    timing = ("chunks_per_s", "query_ms", "index_bytes")
    strip = [{k: v for k, v in vars(s).items() if k not in timing} for s in first.scores]
    assert strip == [{k: v for k, v in vars(s).items() if k not in timing}
                     for s in second.scores]


def test_an_embedder_that_cannot_load_is_reported_and_the_rest_still_run():
    data = topical_set(n_queries=20, n_docs=3)
    result = evaluate(data, contestants(["/no/such/model.gguf"], seed=0))
    failed = result.score("/no/such/model.gguf")
    assert "no GGUF file" in failed.error and failed.ndcg_at_10 is None
    assert result.score("bm25").ndcg_at_10 > 0.5
    assert any("model.gguf" in n for n in result.notes)


# --- a real knowledge base, through the CLI --------------------------------------------------


@pytest.fixture
def topical_kb(tmp_path: Path, minilm_embedder) -> str:
    from core.config import Settings
    from core.rag.indexing import index_paths
    from core.rag.knowledge_base import create_kb

    folder = tmp_path / "docs"
    folder.mkdir()
    for source, text in topical_documents(n_docs=4, sentences=12).items():
        (folder / Path(source).name).write_text(text, encoding="utf-8")
    kb = create_kb("Topics", settings=Settings())
    try:
        index_paths(kb, [folder])
    finally:
        kb.close()
    return str(folder)


@pytest.mark.slow
def test_cli_evaluates_a_knowledge_base_and_stores_the_result(topical_kb, tmp_path, capsys):
    from core.cli import main
    from core.config import Settings
    from core.evaluate.results import load_last
    from core.rag.knowledge_base import open_kb
    from core.rag.store import close_stores

    labels = tmp_path / "labels.csv"
    labels.write_text("where the violin plays,music-3.txt,1\n", encoding="utf-8")
    try:
        assert main(["evaluate", "embedders", "--kb", "Topics", "--queries", str(labels),
                     "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert [s["name"] for s in out["scores"]] == ["minilm", "bm25", "tfidf", "random"]
        assert out["labelled_queries"] == 1 and out["documents"] == 4
        minilm = out["scores"][0]
        assert minilm["dimensions"] == 384 and minilm["max_tokens"] == 256
        assert minilm["ndcg_at_10"] > out["scores"][3]["ndcg_at_10"] + 0.2  # beats random
        assert out["recommendation"] and out["reason"]
        kb = open_kb("Topics", settings=Settings())
        try:
            stored = load_last(kb)
        finally:
            kb.close()
        assert stored is not None and stored.score("minilm").ndcg_at_10 == minilm["ndcg_at_10"]
        # the table for people, and a clear error for a knowledge base that is not there
        assert main(["evaluate", "embedders", "--kb", "Topics", "--embedders", "tfidf"]) == 0
        table = capsys.readouterr().out
        assert "nDCG@10" in table and "recommended:" in table
        assert main(["evaluate", "embedders", "--kb", "Nope"]) != 0
        assert "no knowledge base called 'Nope'" in capsys.readouterr().err
    finally:
        close_stores()


def test_a_cancel_from_the_progress_callback_stops_the_evaluation():
    from core.errors import Cancelled

    calls: list[str] = []

    def stop_at_tfidf(_fraction: float, text: str) -> None:
        calls.append(text)
        if text.startswith("tfidf"):
            raise Cancelled("stopped")

    entrants = contestants([], seed=0)
    with pytest.raises(Cancelled):
        evaluate(topical_set(n_queries=20, n_docs=3), entrants, progress=stop_at_tfidf)
    assert any(c.startswith("bm25") for c in calls) and not any("random" in c for c in calls)
    assert entrants[0]._index is None  # the BM25 scratch index was closed and removed
