"""Where the lab's text comes from (a knowledge base, a file, a built-in preset), split into
sentences of words the way the keyword index splits them."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings
from core.errors import Cancelled, CorralError
from core.rag.keyword import words

Progress = Callable[[float, str], None]
Cancel = Callable[[], bool]

#: The seed notes' worked example for co-occurrence counts.
CAT_DOG = "The cat is fluffy. The dog is fluffy. The cat and the dog are friends."

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def planted_families(sentences: int = 2000, seed: int = 0, mixed: float = 0.1) -> str:
    """A generated text with planted structure: two word families (pets, fruit) whose words
    share their contexts within a family, and only rarely (a ``mixed`` share of sentences)
    across, so a model that learns from contexts puts each family together. (The rare mixed
    sentences matter to GloVe, which learns only from pairs that occur: without them, every
    pair it sees would be equally likely and nothing would set the families apart.)"""
    rng = random.Random(seed)
    shared = ["the", "a", "my", "one", "this", "that"]
    families = [
        (["cat", "dog", "hamster", "rabbit", "parrot"],
         ["sleeps", "plays", "eats", "runs", "hides"], ["on the sofa", "in the garden",
          "with the ball", "near the vet", "under the bed"]),
        (["apple", "banana", "cherry", "mango", "peach"],
         ["ripens", "rots", "grows", "falls", "tastes"], ["in the bowl", "on the tree",
          "for the juice", "at the market", "into the basket"]),
    ]
    lines = []
    for _ in range(sentences):
        one = rng.random() < 0.5
        other = one != (rng.random() < mixed)
        members, (_m, verbs, places) = families[one][0], families[other]
        lines.append(f"{rng.choice(shared)} {rng.choice(members)} {rng.choice(verbs)} "
                     f"{rng.choice(places)}.")
    return "\n".join(lines)


def lee_news() -> str:
    """The Lee background corpus that ships with gensim: 300 short Australian news stories
    (about 60,000 words), enough real English for the quality score to cover some pairs."""
    from gensim.test.utils import datapath

    return Path(datapath("lee_background.cor")).read_text(encoding="utf-8")


PRESETS: dict[str, Callable[[], str]] = {
    "cat-dog": lambda: CAT_DOG,
    "families": planted_families,
    "news": lee_news,
}


@dataclass
class LabText:
    """A text split into sentences of lower-case words (the keyword index's words())."""

    name: str
    sentences: list[list[str]]

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sentences)


def split_sentences(text: str) -> list[list[str]]:
    """Sentences (split at . ! ? and line breaks) as lists of words; empty ones dropped."""
    out = []
    for part in _SENTENCE_END.split(text):
        ws = words(part)
        if ws:
            out.append(ws)
    return out


def from_text(text: str, name: str = "text") -> LabText:
    sentences = split_sentences(text)
    if not sentences:
        raise CorralError(f"{name} holds no words to learn from", hint="Pick a text with some words in it.")
    return LabText(name, sentences)


def from_preset(name: str) -> LabText:
    make = PRESETS.get(name)
    if make is None:
        raise CorralError(f"no preset called {name!r}", hint=f"Use one of: {', '.join(PRESETS)}.")
    return from_text(make(), f"preset {name}")


def from_file(path: Path) -> LabText:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorralError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorralError(f"cannot read {path} as UTF-8 text: {exc}") from None
    return from_text(text, str(path))


def kb_chunks(kb_name: str, *, settings: Settings, progress: Progress | None = None,
              cancelled: Cancel | None = None) -> list[str]:
    """Every chunk text of a knowledge base, read a page at a time (cancellable)."""
    from core.rag.knowledge_base import open_kb

    kb = open_kb(kb_name, settings=settings)
    try:
        texts: list[str] = []
        for _ids, page, _metas, _vectors in kb.iter_chunks(embeddings=False):
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled")
            texts.extend(page)
            if progress is not None:
                progress(-1.0, f"Read {len(texts):,} chunks of {kb_name}")
        return texts
    finally:
        kb.close()


def from_kb(kb_name: str, *, settings: Settings, progress: Progress | None = None,
            cancelled: Cancel | None = None) -> LabText:
    chunks = kb_chunks(kb_name, settings=settings, progress=progress, cancelled=cancelled)
    return from_text("\n".join(chunks), f"knowledge base {kb_name}")


def load(kind: str, value: str, *, settings: Settings | None = None, progress: Progress | None = None,
         cancelled: Cancel | None = None) -> LabText:
    """The text named by ``kind`` ('preset', 'file' or 'kb') and ``value``."""
    if kind == "preset":
        return from_preset(value)
    if kind == "file":
        return from_file(Path(value).expanduser())
    if kind == "kb":
        return from_kb(value, settings=settings or Settings(), progress=progress, cancelled=cancelled)
    raise CorralError(f"unknown text source {kind!r}", hint="Use preset, file or kb.")
