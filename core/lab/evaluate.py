"""How good trained word vectors are, by gensim's shipped test sets restricted to the text's
vocabulary (questions-words.txt analogies, wordsim353.tsv similarities), with the coverage;
and the dimension experiment: the same text at several sizes, scored and timed."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import Cancelled, CorralError
from core.lab.vectors import METHODS, Cancel, Progress, TrainedVectors

#: fewer covered word pairs than this give no similarity score (a rank correlation of a
#: handful of pairs says nothing)
MIN_PAIRS = 5


def _datapath(name: str) -> Path:
    from gensim.test.utils import datapath

    return Path(datapath(name))


@dataclass
class Quality:
    wordsim_spearman: float | None  # Spearman's rho against people's judgements
    wordsim_pairs: int  # pairs with both words in the vocabulary
    wordsim_total: int
    analogy_accuracy: float | None  # share of a:b::c:? answered right (top 1)
    analogy_questions: int  # questions with all four words in the vocabulary
    analogy_total: int

    @property
    def score(self) -> float | None:
        """The quality score: the similarity rank correlation (analogy accuracy where too
        few word pairs are covered); None where neither test set covers the text."""
        return self.wordsim_spearman if self.wordsim_spearman is not None else self.analogy_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "score": self.score}


def _pairs_total(path: Path) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return sum(1 for line in lines if line.strip() and not line.startswith("#"))


def _questions_total(path: Path) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return sum(1 for line in lines if line.strip() and not line.startswith(":"))


def quality(tv: TrainedVectors) -> Quality:
    kv = tv.keyed
    known = kv.key_to_index
    pairs_path, questions_path = _datapath("wordsim353.tsv"), _datapath("questions-words.txt")
    covered = 0
    for line in pairs_path.read_text(encoding="utf-8").splitlines():
        parts = line.lower().split("\t")
        if not line.startswith("#") and len(parts) >= 3 and parts[0] in known and parts[1] in known:
            covered += 1
    rho: float | None = None
    quiet = logging.getLogger("gensim.models.keyedvectors")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # gensim logs every evaluation at INFO/WARNING
    try:
        if covered >= MIN_PAIRS:
            _pearson, spearman, _oov = kv.evaluate_word_pairs(str(pairs_path), restrict_vocab=len(kv))
            value = float(spearman[0])
            rho = None if math.isnan(value) else value
        _score, sections = kv.evaluate_word_analogies(str(questions_path), restrict_vocab=len(kv))
    finally:
        quiet.setLevel(level)
    total = sections[-1] if sections else {"correct": [], "incorrect": []}
    asked = len(total["correct"]) + len(total["incorrect"])
    accuracy = len(total["correct"]) / asked if asked else None
    return Quality(rho, covered, _pairs_total(pairs_path), accuracy, asked,
                   _questions_total(questions_path))


@dataclass
class DimensionRow:
    dimension: int
    seconds: float
    quality: Quality

    def to_dict(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "seconds": round(self.seconds, 4),
                **self.quality.to_dict()}


Trainer = Callable[..., TrainedVectors]


def trainer(method: str) -> Trainer:
    if method not in METHODS:
        raise CorralError(f"unknown method {method!r}", hint=f"Use one of: {', '.join(METHODS)}.")
    if method == "glove":
        from core.lab.glove import train_glove

        return train_glove
    from core.lab.word2vec import train_word2vec

    def w2v(sentences: list[list[str]], **kw: Any) -> TrainedVectors:
        return train_word2vec(sentences, arch=method, **kw)

    return w2v


def dimension_experiment(sentences: list[list[str]], dims: list[int], method: str = "cbow", *,
                         progress: Progress | None = None, cancelled: Cancel | None = None,
                         **params: Any) -> list[DimensionRow]:
    """Train ``method`` once per dimension count in ``dims`` with the same other parameters;
    score each and time it. Cancelled: Cancelled whose partial is the rows done so far."""
    if not dims or any(d < 1 for d in dims):
        raise CorralError("give one or more dimension counts, each at least 1")
    train = trainer(method)
    rows: list[DimensionRow] = []
    for n, dim in enumerate(dims):
        def report(f: float, text: str, n: int = n, dim: int = dim) -> None:
            if progress is not None:
                progress((n + f) / len(dims), f"{dim} dimensions: {text}")
        try:
            tv = train(sentences, dim=dim, progress=report, cancelled=cancelled, **params)
        except Cancelled:
            raise Cancelled("cancelled", partial=rows) from None
        rows.append(DimensionRow(dim, tv.seconds, quality(tv)))
    return rows
