"""Word vectors in the lab: planted word families found by CBOW, skip-gram and GloVe; GloVe's
counts and cost; the co-occurrence table; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.cli import run_subcommand
from core.errors import Cancelled, CorralError
from core.lab import corpus
from core.lab.cooccur import cooccurrence, vocabulary
from core.lab.glove import train_glove, weighting
from core.lab.vectors import analogy, nearest, word_map
from core.lab.word2vec import train_word2vec

PETS = ["cat", "dog", "hamster", "rabbit", "parrot"]
FRUIT = ["apple", "banana", "cherry", "mango", "peach"]


@pytest.fixture(scope="module")
def planted() -> list[list[str]]:
    return corpus.from_preset("families").sentences


def _families_hold(tv) -> None:
    """Each family word's nearest neighbours, over the whole vocabulary, are its family."""
    for family in (PETS, FRUIT):
        for word in family:
            found = {w for w, _s in nearest(tv, word, len(family) - 1)}
            assert found == set(family) - {word}, (tv.method, word, nearest(tv, word, 6))


@pytest.mark.parametrize("arch", ["cbow", "skipgram"])
def test_word2vec_puts_each_planted_family_together(planted, arch) -> None:
    tv = train_word2vec(planted, arch=arch, dim=20, window=3, epochs=30, seed=1, workers=1)
    assert tv.method == arch and tv.epochs == 30 and tv.dimension == 20
    _families_hold(tv)
    again = train_word2vec(planted, arch=arch, dim=20, window=3, epochs=30, seed=1, workers=1)
    np.testing.assert_array_equal(tv.keyed["cat"], again.keyed["cat"])  # seeded: the same


def test_glove_puts_each_planted_family_together_and_its_cost_falls_every_epoch(planted) -> None:
    seen: list[float] = []
    tv = train_glove(planted, dim=20, window=3, epochs=30, seed=0,
                     progress=lambda f, _t: seen.append(f))
    _families_hold(tv)
    assert len(tv.losses) == 30
    assert all(b < a for a, b in zip(tv.losses, tv.losses[1:], strict=False)), tv.losses
    assert tv.losses[-1] < 0.25 * tv.losses[0]
    assert seen == sorted(seen) and seen[-1] == 1.0
    # the analogy arithmetic runs on the same vectors: pet - pet + fruit lands among the fruit
    assert analogy(tv, "cat", "dog", "apple", k=1)[0][0] in FRUIT


def _brute_force(sentences: list[list[str]], words: list[str], window: int) -> np.ndarray:
    index = {w: i for i, w in enumerate(words)}
    x = np.zeros((len(words), len(words)))
    for sentence in sentences:
        kept = [index[w] for w in sentence if w in index]  # rare words out first, as GloVe does
        for i, a in enumerate(kept):
            for d in range(1, window + 1):
                if i + d < len(kept):
                    b = kept[i + d]
                    x[a, b] += 1.0 / d
                    x[b, a] += 1.0 / d
    return x


@pytest.mark.parametrize(("window", "min_count"), [(1, 1), (3, 1), (10, 2)])
def test_cooccurrence_equals_a_brute_force_count(window, min_count) -> None:
    text = corpus.from_text(corpus.planted_families(150, seed=3) + "\n" + corpus.CAT_DOG
                            + " A lone word here. Cat cat cat dog.")
    vocab = vocabulary(text.sentences, min_count)
    fast = cooccurrence(text.sentences, vocab, window).toarray()
    np.testing.assert_allclose(fast, _brute_force(text.sentences, vocab.words, window), rtol=1e-12)
    np.testing.assert_allclose(fast, fast.T)


def test_the_seed_sentences_cooccurrence_table() -> None:
    text = corpus.from_preset("cat-dog")
    vocab = vocabulary(text.sentences)
    x = cooccurrence(text.sentences, vocab, window=1).toarray()
    at = vocab.index()
    assert vocab.words[0] == "the" and vocab.counts[0] == 4
    assert x[at["fluffy"], at["is"]] == 2.0  # "is fluffy" twice
    assert x[at["cat"], at["the"]] == 2.0 and x[at["cat"], at["dog"]] == 0.0
    assert x[at["the"], at["dog"]] == 2.0


def test_glove_weighting_is_the_papers() -> None:
    np.testing.assert_allclose(weighting(np.array([1.0, 50.0, 100.0, 400.0])),
                               [0.01 ** 0.75, 0.5 ** 0.75, 1.0, 1.0])


def test_training_stops_on_cancel_and_keeps_what_it_learnt(planted) -> None:
    calls = {"n": 0}

    def cancelled() -> bool:
        calls["n"] += 1
        return calls["n"] > 30

    with pytest.raises(Cancelled) as caught:
        train_glove(planted, dim=8, window=3, epochs=50, seed=0, cancelled=cancelled)
    partial = caught.value.partial
    assert 0 < partial.epochs < 50 and len(partial.losses) == partial.epochs
    assert len(partial.keyed) == len(vocabulary(planted).words)
    calls["n"] = 0
    with pytest.raises(Cancelled) as caught:
        train_word2vec(planted, dim=8, epochs=50, cancelled=cancelled)
    assert caught.value.partial.epochs < 50


def test_bad_input_gets_a_clear_error(planted) -> None:
    tv = train_word2vec(planted, dim=8, epochs=1)
    with pytest.raises(CorralError, match="not in the vocabulary: unicorn"):
        nearest(tv, "unicorn")
    with pytest.raises(CorralError, match="no word occurs 5 times"):
        train_glove(corpus.from_preset("cat-dog").sentences, min_count=5)
    with pytest.raises(CorralError, match="holds no words"):
        corpus.from_text(" ... !!! ")
    with pytest.raises(CorralError, match="no preset called"):
        corpus.from_preset("nope")
    words, coords = word_map(tv, limit=10)
    assert len(words) == 10 and coords.shape == (10, 2)


def test_cli_cooccur_json_is_the_matrix(capsys) -> None:
    assert run_subcommand("lab", ["cooccur", "--window", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    text = corpus.from_preset("cat-dog")
    vocab = vocabulary(text.sentences)
    assert out["words"] == vocab.words
    np.testing.assert_allclose(out["matrix"], _brute_force(text.sentences, vocab.words, 2))


def test_cli_trains_word2vec_and_glove_with_nearest_words(capsys, tmp_path) -> None:
    path = tmp_path / "text.txt"
    path.write_text(corpus.planted_families(2000), encoding="utf-8")
    assert run_subcommand("lab", ["word2vec", "--file", str(path), "--arch", "skipgram", "--dim", "20",
                                  "--window", "3", "--epochs", "30", "--nearest", "mango",
                                  "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "skipgram" and out["dimension"] == 20
    assert {n["word"] for n in out["nearest"]["mango"][:4]} == set(FRUIT) - {"mango"}
    assert out["quality"]["wordsim_total"] == 353 and out["quality"]["analogy_total"] == 19544
    assert run_subcommand("lab", ["glove", "--dim", "20", "--window", "3", "--epochs", "30",
                                  "--analogy", "cat", "dog", "apple"]) == 0
    text = capsys.readouterr().out
    assert "glove on preset families: 44 words, 20 dimensions, 30 epochs" in text
    assert "cat - dog + apple:" in text
    assert run_subcommand("lab", ["glove", "--nearest", "unicorn"]) == 1
    assert "not in the vocabulary: unicorn" in capsys.readouterr().err


def test_a_glove_epoch_is_adagrad_on_each_nonzero_as_written_in_the_paper() -> None:
    """With batches of one, an epoch equals a plain loop over the nonzeros: the cost, then
    AdaGrad on w_i, w~_j, b_i, b~_j from the same (old) values."""
    import copy

    from core.lab.glove import GloveTrainer

    text = corpus.from_preset("cat-dog").sentences
    vocab = vocabulary(text)
    x = cooccurrence(text, vocab, 3).tocoo()
    trainer = GloveTrainer(vocab, x.row, x.col, x.data, dim=4, seed=5, learning_rate=0.05,
                           x_max=100.0, alpha=0.75, params={})
    w, wc = trainer.w.astype(np.float64), trainer.wc.astype(np.float64)
    b, bc = trainer.b[:, 0].astype(np.float64), trainer.bc[:, 0].astype(np.float64)
    gw, gwc, gb, gbc = np.ones_like(w), np.ones_like(wc), np.ones_like(b), np.ones_like(bc)
    order = copy.deepcopy(trainer.rng).permutation(x.nnz)
    cost = 0.0
    for k in order:
        i, j, value = x.row[k], x.col[k], x.data[k]
        diff = w[i] @ wc[j] + b[i] + bc[j] - np.log(value)
        fdiff = min(1.0, (value / 100.0) ** 0.75) * diff
        cost += 0.5 * fdiff * diff
        gi, gj = fdiff * wc[j], fdiff * w[i]
        w[i] -= 0.05 * gi / np.sqrt(gw[i])
        wc[j] -= 0.05 * gj / np.sqrt(gwc[j])
        gw[i] += gi * gi
        gwc[j] += gj * gj
        b[i] -= 0.05 * fdiff / np.sqrt(gb[i])
        bc[j] -= 0.05 * fdiff / np.sqrt(gbc[j])
        gb[i] += fdiff * fdiff
        gbc[j] += fdiff * fdiff
    got = trainer.epoch(batch_size=1)
    assert got == pytest.approx(cost / x.nnz, rel=1e-5)
    np.testing.assert_allclose(trainer.w, w, atol=1e-6)
    np.testing.assert_allclose(trainer.wc, wc, atol=1e-6)
    np.testing.assert_allclose(trainer.b[:, 0], b, atol=1e-6)
    np.testing.assert_allclose(trainer.vectors(), w + wc, atol=1e-6)
