"""Questions a chat model writes about sampled chunks: the real SmolLM2-135M writes them in
the engine child, the same ones every run, each labelled with its chunk; replies that are no
question are left out."""

from __future__ import annotations

import pytest

from core.evaluate.contestants import TfidfContestant
from core.evaluate.dataset import EvaluationSet, Passage
from core.evaluate.questions import clean_question, written_questions
from core.evaluate.run import evaluate

CORPUS = [
    Passage("sea", "The harbor lighthouse was built in 1821 to guide fishing boats past the "
            "coral reef.", "/d/sea.txt", 0, 80),
    Passage("violin", "Violins are carved from spruce and maple, then varnished by hand.",
            "/d/violin.txt", 0, 66),
    Passage("bread", "Bread dough must rest for an hour so the yeast can make it rise before "
            "baking.", "/d/bread.txt", 0, 78),
]


@pytest.mark.parametrize("reply, question", [
    ("Question: What guides the boats?", "What guides the boats?"),
    ('"Why does dough rest?" That is a good one.', "Why does dough rest?"),
    ("What is the answer to this question? Is spruce used for violins?",
     "Is spruce used for violins?"),
    ("What a wonderful tribute to nature!", ""),
    ("Why?", ""),
])
def test_a_reply_becomes_its_first_real_question(reply: str, question: str):
    assert clean_question(reply) == question


@pytest.mark.real_model
def test_smollm2_writes_the_same_labelled_questions_every_run(smollm2):
    first = written_questions(smollm2, CORPUS, n=3, seed=0)
    assert first == written_questions(smollm2, CORPUS, n=3, seed=0)
    assert len(first) >= 2 and all(q.text.endswith("?") for q in first)
    assert all(len(q.labels) == 1 and q.labels[0][0] in {p.id for p in CORPUS} for q in first)
    by_id = {p.id: p for p in CORPUS}
    assert all(q.source == by_id[q.labels[0][0]].source for q in first)
    # they take part in an evaluation as labelled queries, answered by their chunk
    result = evaluate(EvaluationSet(list(CORPUS), first), [TfidfContestant()])
    assert result.labelled_queries == len(first)
    assert result.score("tfidf").ndcg_at_10 > 0.5
