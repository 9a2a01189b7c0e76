"""The seed's Keras sentiment example written with torch: an Embedding layer, the mean of the
word vectors, a Dense (Linear) layer and a sigmoid, trained on labelled sentences; beside it,
logistic regression (scikit-learn) on MiniLM sentence embeddings, on the same split."""

from __future__ import annotations

import csv
import io
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import Cancelled, CorralError, FeatureUnavailable
from core.lab.vectors import Cancel, Progress
from core.rag.keyword import words

_GOOD = ["great", "wonderful", "excellent", "lovely", "delicious", "friendly", "superb", "perfect"]
_BAD = ["terrible", "awful", "horrible", "rude", "disgusting", "boring", "dreadful", "broken"]
_THINGS = ["food", "service", "film", "room", "staff", "music", "book", "coffee", "hotel", "game"]
_FRAMES = ["the {t} was {a}", "what a {a} {t}", "i found the {t} {a}", "honestly the {t} is {a}",
           "a really {a} {t}", "our {t} was {a} today"]


def toy_sentiment(seed: int = 0) -> tuple[list[str], list[int]]:
    """A built-in sentiment set: short reviews, 1 for a positive word, 0 for a negative one."""
    rng = random.Random(seed)
    texts, labels = [], []
    for label, adjectives in ((1, _GOOD), (0, _BAD)):
        for n in range(40):  # every adjective five times, every thing four times per class
            frame = rng.choice(_FRAMES)
            texts.append(frame.format(t=_THINGS[n % len(_THINGS)], a=adjectives[n % len(adjectives)]))
            labels.append(label)
    return texts, labels


def read_labelled_csv(path: Path) -> tuple[list[str], list[int], list[str]]:
    """(texts, labels 0/1, the two class names) from a CSV with a text column and a label
    column (headers 'text' and 'label', else the first two columns); exactly two classes."""
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CorralError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorralError(f"cannot read {path} as UTF-8 text: {exc}") from None
    rows = [r for r in csv.reader(io.StringIO(raw)) if any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["text", "label"]:
        rows = rows[1:]
    bad = next((n for n, r in enumerate(rows, 1) if len(r) < 2 or not r[0].strip()), None)
    if bad is not None:
        raise CorralError(f"{path}: row {bad} needs a text and a label",
                          hint="Write one labelled sentence per row: text,label.")
    texts = [r[0].strip() for r in rows]
    names = sorted({r[1].strip() for r in rows})
    if len(names) != 2:
        raise CorralError(f"{path}: needs exactly two labels, found {len(names)}",
                          hint="Label each sentence with one of two classes (e.g. 0 and 1).")
    labels = [names.index(r[1].strip()) for r in rows]
    if min(labels.count(0), labels.count(1)) < 2:
        raise CorralError(f"{path}: each label needs at least two sentences")
    return texts, labels, names


@dataclass
class SideResult:
    name: str
    accuracy: float
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    seconds: float
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "accuracy": self.accuracy, "confusion": self.confusion,
                "seconds": round(self.seconds, 4), "losses": [round(x, 5) for x in self.losses]}


@dataclass
class Comparison:
    classes: list[str]
    train_size: int
    test_size: int
    embedding: SideResult
    minilm: SideResult | None

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "train": self.train_size, "test": self.test_size,
                "embedding_layer": self.embedding.to_dict(),
                "minilm_logistic": None if self.minilm is None else self.minilm.to_dict()}


def _confusion(truth: list[int], predicted: list[int]) -> list[list[int]]:
    from sklearn.metrics import confusion_matrix

    return [[int(x) for x in row] for row in confusion_matrix(truth, predicted, labels=[0, 1])]


def _encode(texts: list[str], index: dict[str, int]) -> np.ndarray:
    """Word ids, 0 for padding and 1 for words unseen in training, padded to the longest."""
    rows = [[index.get(w, 1) for w in words(t)] or [1] for t in texts]
    out = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int64)
    for n, r in enumerate(rows):
        out[n, :len(r)] = r
    return out


def train_embedding_classifier(train: tuple[list[str], list[int]], test: tuple[list[str], list[int]],
                               *, dim: int = 16, epochs: int = 60, seed: int = 0,
                               progress: Progress | None = None, cancelled: Cancel | None = None
                               ) -> SideResult:
    """Embedding -> mean over the real words -> Linear -> sigmoid, full-batch Adam on binary
    cross-entropy. Cancelled: Cancelled (nothing partial worth keeping)."""
    try:
        import torch
    except ImportError as exc:
        raise FeatureUnavailable(
            "the Lab's embedding-layer classifier needs torch, which this copy of Corral "
            "leaves out", hint="Install Corral from pip to train it.") from exc

    start = time.perf_counter()
    torch.manual_seed(seed)
    vocab = sorted({w for t in train[0] for w in words(t)})
    index = {w: n + 2 for n, w in enumerate(vocab)}
    x = torch.from_numpy(_encode(train[0], index))
    y = torch.tensor(train[1], dtype=torch.float32)
    embed = torch.nn.Embedding(len(vocab) + 2, dim, padding_idx=0)
    dense = torch.nn.Linear(dim, 1)
    params = list(embed.parameters()) + list(dense.parameters())
    optimiser = torch.optim.Adam(params, lr=0.05)

    def forward(ids: Any) -> Any:
        mask = (ids != 0).float().unsqueeze(-1)
        mean = (embed(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.sigmoid(dense(mean)).squeeze(-1)

    losses = []
    for e in range(epochs):
        if cancelled is not None and cancelled():
            raise Cancelled("cancelled")
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy(forward(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        losses.append(loss.item())
        if progress is not None:
            progress((e + 1) / epochs, f"Embedding layer: epoch {e + 1} of {epochs}, loss {losses[-1]:.4f}")
    with torch.no_grad():
        predicted = (forward(torch.from_numpy(_encode(test[0], index))) >= 0.5).long().tolist()
    accuracy = float(np.mean(np.array(predicted) == np.array(test[1])))
    return SideResult("embedding layer (torch)", accuracy, _confusion(test[1], predicted),
                      time.perf_counter() - start, losses)


def minilm_logistic(train: tuple[list[str], list[int]], test: tuple[list[str], list[int]],
                    progress: Progress | None = None) -> SideResult:
    """Logistic regression on the bundled MiniLM's sentence embeddings."""
    from sklearn.linear_model import LogisticRegression

    from core.rag.embedder import shared_embedder

    start = time.perf_counter()
    if progress is not None:
        progress(-1.0, "Embedding the sentences with MiniLM")
    emb = shared_embedder("minilm")
    model = LogisticRegression(max_iter=1000).fit(emb.embed(train[0]), train[1])
    predicted = [int(p) for p in model.predict(emb.embed(test[0]))]
    if progress is not None:
        progress(1.0, "Logistic regression on MiniLM: done")
    accuracy = float(np.mean(np.array(predicted) == np.array(test[1])))
    return SideResult("logistic regression on MiniLM", accuracy, _confusion(test[1], predicted),
                      time.perf_counter() - start)


def compare(texts: list[str], labels: list[int], *, classes: list[str] | None = None,
            test_share: float = 0.25, seed: int = 0, dim: int = 16, epochs: int = 60,
            with_minilm: bool = True, progress: Progress | None = None,
            cancelled: Cancel | None = None) -> Comparison:
    """Split once (stratified, seeded), train both sides on the same part, test on the rest."""
    from sklearn.model_selection import train_test_split

    if len(texts) != len(labels) or len(texts) < 8:
        raise CorralError("give at least 8 labelled sentences")
    if not 0.0 < test_share < 1.0:
        raise CorralError("the test share must lie between 0 and 1")
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            texts, labels, test_size=test_share, random_state=seed, stratify=labels)
    except ValueError as exc:
        raise CorralError(f"cannot split these sentences for testing: {exc}") from None

    def part(lo: float, hi: float) -> Progress | None:
        if progress is None:
            return None
        report = progress
        return lambda f, text: report(lo + (hi - lo) * max(f, 0.0), text)

    embedding = train_embedding_classifier((x_train, y_train), (x_test, y_test), dim=dim,
                                           epochs=epochs, seed=seed, progress=part(0.0, 0.6),
                                           cancelled=cancelled)
    minilm = None
    if with_minilm:
        if cancelled is not None and cancelled():
            raise Cancelled("cancelled")
        minilm = minilm_logistic((x_train, y_train), (x_test, y_test), part(0.6, 1.0))
    return Comparison(classes or ["0", "1"], len(x_train), len(x_test), embedding, minilm)
