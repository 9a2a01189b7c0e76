"""Mean pooling by hand vs sentence-transformers, one word in several contexts, and the
embedding-layer classifier beside logistic regression on MiniLM (MiniLM loads once)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.cli import run_subcommand
from core.errors import Cancelled, CorralError
from core.lab.classify import compare, read_labelled_csv, toy_sentiment, train_embedding_classifier
from core.lab.contextual import context_table, pooling_steps

pytestmark = pytest.mark.slow

BANK = ["I sat on the river bank and watched the water.",
        "The bank approved my loan this morning.",
        "She deposited her savings at the bank."]


def test_mean_pooling_by_hand_equals_sentence_transformers(minilm_embedder) -> None:
    sentences = ["Hello", "The cat is fluffy.", "Mean pooling averages every real token's vector."]
    steps = pooling_steps(sentences)
    # one padded batch: the short sentences carry padding that the mask leaves out
    assert steps.mask[0].sum() == 3 and steps.mask[0, 3:].sum() == 0
    assert steps.tokens[0][:3] == ["[CLS]", "hello", "[SEP]"]
    assert np.all(steps.cosine >= 0.99999), steps.cosine
    np.testing.assert_allclose(np.linalg.norm(steps.normalised, axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(steps.normalised, minilm_embedder.embed(sentences), atol=1e-5)
    # without the mask the padding would pull the short sentence away from its embedding
    unmasked = steps.token_vectors[0].mean(axis=0)
    unmasked /= np.linalg.norm(unmasked)
    assert float(unmasked @ steps.library[0]) < 0.999


def test_a_word_gets_one_vector_per_context_from_minilm(minilm_embedder) -> None:
    table = context_table("bank", BANK, static_vector=np.ones(8))
    c = table.contextual
    np.testing.assert_allclose(np.diag(c), 1.0, rtol=1e-9)
    assert c[1, 2] > c[0, 1] and c[1, 2] > c[0, 2]  # the two money banks are closer
    assert c[0, 1] < 0.95
    np.testing.assert_allclose(table.static, 1.0)  # a static model: one vector everywhere
    with pytest.raises(CorralError, match="does not occur"):
        context_table("bank", ["No such word here.", "Nor here."])


def test_cli_pooling_json_reports_each_step(capsys, minilm_embedder) -> None:
    assert run_subcommand("lab", ["pooling", "A short one.", "A much longer sentence than that.",
                                  "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["sentences"]
    assert out[0]["real_tokens"] < len(out[0]["mask"]) and out[0]["cosine"] >= 0.99999
    assert run_subcommand("lab", ["pooling", *BANK, "--word", "bank"]) == 0
    assert "cosine of 'bank'" in capsys.readouterr().out


def test_both_classifiers_separate_the_toy_set(minilm_embedder) -> None:
    texts, labels = toy_sentiment()
    seen: list[float] = []
    result = compare(texts, labels, classes=["negative", "positive"], seed=0,
                     progress=lambda f, _t: seen.append(f))
    assert result.embedding.accuracy >= 0.95 and result.minilm is not None
    assert result.minilm.accuracy >= 0.95
    for side in (result.embedding, result.minilm):
        assert sum(map(sum, side.confusion)) == result.test_size == 20
        assert side.confusion[0][0] + side.confusion[1][1] == round(side.accuracy * 20)
    assert result.embedding.losses[-1] < result.embedding.losses[0]
    assert max(seen) == pytest.approx(1.0) and seen[0] < 0.1


def test_cli_classify_a_users_csv(capsys, tmp_path, minilm_embedder) -> None:
    texts, labels = toy_sentiment(seed=3)
    rows = ["text,label"] + [f"{t},{'yes' if y else 'no'}" for t, y in zip(texts, labels, strict=True)]
    path = tmp_path / "labelled.csv"
    path.write_text("\n".join(rows), encoding="utf-8")
    assert run_subcommand("lab", ["classify", "--csv", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["classes"] == ["no", "yes"] and out["test"] == 20
    assert out["embedding_layer"]["accuracy"] >= 0.95 and out["minilm_logistic"]["accuracy"] >= 0.95


def test_bad_csv_gets_a_clear_error(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("text,label\ngood,1\nbad,0\nugly,2\n", encoding="utf-8")
    with pytest.raises(CorralError, match="exactly two labels, found 3"):
        read_labelled_csv(path)
    path.write_text("text,label\ngood,1\n,0\n", encoding="utf-8")
    with pytest.raises(CorralError, match="row 2 needs a text and a label"):
        read_labelled_csv(path)
    with pytest.raises(CorralError, match="no such file"):
        read_labelled_csv(tmp_path / "missing.csv")


def test_classifier_training_stops_on_cancel() -> None:
    texts, labels = toy_sentiment()
    with pytest.raises(Cancelled):
        train_embedding_classifier((texts, labels), (texts, labels), epochs=500,
                                   cancelled=lambda: True)
