"""Stemming vs lemmatization (the seed's examples via the CLI), keyword recall with and
without stemming, and the quality score's coverage of gensim's test sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.cli import run_subcommand
from core.errors import CorralError
from core.lab.evaluate import dimension_experiment, quality
from core.lab.stemming import generate_queries, keyword_recall, lemma, stem
from core.lab.vectors import TrainedVectors, keyed_vectors
from core.rag.keyword import words


def test_the_seed_examples_via_the_cli(capsys) -> None:
    assert run_subcommand("lab", ["stem", "running", "happily", "better", "--pos", "adj",
                                  "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"word": "running", "stem": "run", "lemma": "run"},
                    {"word": "happily", "stem": "happili", "lemma": "happily"},
                    {"word": "better", "stem": "better", "lemma": "good"}]
    assert run_subcommand("lab", ["stem", "Better", "studies", "--pos", "adv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["word", "stem", "lemma", "(adv)"]
    assert out[1].split() == ["Better", "better", "well"]
    assert out[2].split() == ["studies", "studi", "study"]


def test_part_of_speech_changes_only_what_it_should() -> None:
    assert lemma("better") == "good"  # simplemma's best guess without a part of speech
    assert lemma("better", "verb") == "better"  # to better oneself
    assert lemma("worst", "adj") == "bad" and lemma("worse", "adv") == "badly"
    assert lemma("mice", "noun") == "mouse" and lemma("ran", "verb") == "run"
    with pytest.raises(CorralError, match="unknown part of speech"):
        lemma("better", "pronoun")


def test_cli_stem_refuses_nothing_to_do(capsys) -> None:
    assert run_subcommand("lab", ["stem"]) == 1
    assert "give one or more words" in capsys.readouterr().err


CHUNKS = [
    "The indexer splits documents into chunks before indexing them.",
    "Retrieval ranks chunks by cosine similarity and returns the closest ones.",
    "A guard model checks every answer and blocks unsafe replies.",
    "Engines load quantized weights and generate tokens quickly.",
    "Stemming maps running, runs and ran towards one form.",
    "Users index folders; the index keeps one chunk per passage.",
    "Rankings change when a retriever returned other chunks.",
    "The guard checked the reply and blocked it as unsafe.",
    "Loading weights takes seconds; generating a token takes milliseconds.",
    "A chunker keeps passages short so that each chunk fits the model.",
]


def test_generated_queries_use_other_forms_of_the_chunks_words() -> None:
    queries = generate_queries(CHUNKS, n=20, seed=1)
    assert queries
    for q in queries:
        chunk_words = set(words(CHUNKS[q.target]))
        assert {stem(w) for w in q.text.split()} <= {stem(w) for w in chunk_words}
        assert not set(q.text.split()) & chunk_words  # each word in another form


def test_stemming_raises_keyword_recall_on_inflected_queries() -> None:
    result = keyword_recall(CHUNKS, queries=20, k=2, seed=1)
    assert result.stemmed_recall >= result.plain_recall + 0.4, result.to_dict()
    assert result.to_dict()["queries"] == len(result.queries)
    with pytest.raises(CorralError, match="no chunk holds a word"):
        keyword_recall(["one two three"], queries=5)


def _wordsim_pairs_within(words: set[str]) -> int:
    from gensim.test.utils import datapath

    lines = Path(datapath("wordsim353.tsv")).read_text(encoding="utf-8").splitlines()
    pairs = [line.lower().split("\t")[:2] for line in lines if not line.startswith("#")]
    return sum(a in words and b in words for a, b in pairs)


def test_quality_is_restricted_to_the_vocabulary_and_reports_coverage() -> None:
    words = ["king", "queen", "man", "woman", "tiger", "cat", "love", "sex", "money", "cash",
             "boy", "girl", "brother", "sister", "computer", "keyboard"]
    rng = np.random.default_rng(0)
    tv = TrainedVectors("glove", keyed_vectors(words, rng.normal(size=(len(words), 8))), 0.0, 1)
    q = quality(tv)
    assert q.wordsim_total == 353 and q.analogy_total == 19544
    assert q.wordsim_pairs == _wordsim_pairs_within(set(words)) >= 5
    assert q.wordsim_spearman is not None and -1.0 <= q.wordsim_spearman <= 1.0
    assert q.analogy_questions > 0  # king : queen :: man : woman and the like
    assert q.score == q.wordsim_spearman
    # vectors that put each pair at the same place answer every covered analogy right?
    nothing = TrainedVectors("cbow", keyed_vectors(["zzz", "qqq"], np.eye(2)), 0.0, 1)
    empty = quality(nothing)
    assert empty.score is None and empty.wordsim_pairs == 0 and empty.analogy_questions == 0


def test_dimension_experiment_times_and_scores_each_size() -> None:
    from core.lab.corpus import from_preset

    seen: list[str] = []
    rows = dimension_experiment(from_preset("families").sentences, [2, 8], "cbow", epochs=2,
                                progress=lambda f, t: seen.append(t))
    assert [r.dimension for r in rows] == [2, 8]
    assert all(r.seconds > 0 for r in rows)
    assert any(t.startswith("8 dimensions") for t in seen)
    with pytest.raises(CorralError, match="dimension counts"):
        dimension_experiment([["a", "b"]], [], "cbow")
    with pytest.raises(CorralError, match="unknown method"):
        dimension_experiment([["a", "b"]], [2], "fasttext")


@pytest.mark.slow
def test_cli_reads_a_knowledge_base_for_recall_and_counts(capsys, tmp_path, minilm_embedder) -> None:
    from core.config import Settings
    from core.rag.indexing import index_paths
    from core.rag.knowledge_base import create_kb
    from core.rag.store import close_stores

    docs = tmp_path / "docs"
    docs.mkdir()
    for n, text in enumerate(CHUNKS):
        (docs / f"note{n}.txt").write_text(text + "\n", encoding="utf-8")
    kb = create_kb("Lab notes", settings=Settings())
    try:
        index_paths(kb, [docs])
    finally:
        kb.close()
    try:
        assert run_subcommand("lab", ["stem", "--kb", "Lab notes", "-k", "2", "--json"]) == 0
        recall = json.loads(capsys.readouterr().out)["recall"]
        assert recall["queries"] >= 8  # at most one per chunk with a word in another form elsewhere
        assert recall["stemmed_recall"] >= recall["plain_recall"] + 0.4
        assert run_subcommand("lab", ["cooccur", "--kb", "Lab notes", "--limit", "3", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["text"] == "knowledge base Lab notes" and out["words"][0] == "the"
        assert run_subcommand("lab", ["cooccur", "--kb", "No such"]) == 1
        assert "No such" in capsys.readouterr().err
    finally:
        close_stores()
