"""A small byte-pair-encoding trainer that shows its work, one merge at a time.

Follows the classic word-level algorithm (Sennrich et al. 2016): words become characters plus
an end-of-word marker, and each step merges the most frequent adjacent pair. Ties go to the
pair seen first in the text, so the walk-through is the same on every run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

END_OF_WORD = "</w>"

#: The textbook example: "low" x5, "lower" x2, "newest" x6, "widest" x3.
CLASSIC_TEXT = " ".join(["low"] * 5 + ["lower"] * 2 + ["newest"] * 6 + ["widest"] * 3)

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)

Pair = tuple[str, str]
Word = tuple[str, ...]


@dataclass(frozen=True)
class BpeStep:
    """One merge: which pair, how often it occurred, and every word's pieces afterwards."""

    number: int  # 1-based
    pair: Pair
    merged: str
    count: int
    words: list[tuple[Word, int]]  # (pieces, frequency) after this merge, in text order
    vocabulary: list[str]  # symbols in use after the merge, sorted
    top_pairs: list[tuple[Pair, int]]  # the most frequent pairs before the merge

    def describe(self) -> str:
        a, b = self.pair
        return f"Step {self.number}: merge '{a}' + '{b}' -> '{self.merged}' ({self.count} times)"


def split_words(text: str) -> list[str]:
    """Words and punctuation marks, in order."""
    return _WORD.findall(text)


def initial_words(text: str, end_marker: str = END_OF_WORD) -> list[tuple[Word, int]]:
    """Each distinct word as single characters (plus the marker), with its frequency."""
    counts: dict[Word, int] = {}
    for w in split_words(text):
        symbols = tuple(w) + ((end_marker,) if end_marker else ())
        counts[symbols] = counts.get(symbols, 0) + 1
    return list(counts.items())


def pair_counts(words: Sequence[tuple[Word, int]]) -> dict[Pair, int]:
    """Adjacent-pair frequencies, in order of first appearance."""
    counts: dict[Pair, int] = {}
    for symbols, freq in words:
        for a, b in zip(symbols, symbols[1:], strict=False):
            counts[(a, b)] = counts.get((a, b), 0) + freq
    return counts


def merge_word(symbols: Word, pair: Pair) -> Word:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def vocabulary_of(words: Sequence[tuple[Word, int]]) -> list[str]:
    return sorted({s for symbols, _ in words for s in symbols})


def bpe_steps(
    text: str = CLASSIC_TEXT,
    max_merges: int = 20,
    *,
    min_count: int = 2,
    end_marker: str = END_OF_WORD,
    top: int = 5,
) -> Iterator[BpeStep]:
    """Yield the merges one by one until ``max_merges`` or no pair occurs ``min_count`` times."""
    words = initial_words(text, end_marker)
    for number in range(1, max_merges + 1):
        counts = pair_counts(words)
        if not counts:
            return
        best, best_count = max(counts.items(), key=lambda kv: kv[1])  # first wins ties
        if best_count < min_count:
            return
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]  # stable: text order
        words = [(merge_word(symbols, best), freq) for symbols, freq in words]
        yield BpeStep(
            number=number,
            pair=best,
            merged=best[0] + best[1],
            count=best_count,
            words=words,
            vocabulary=vocabulary_of(words),
            top_pairs=ranked,
        )


def learn_merges(
    text: str, max_merges: int = 20, *, min_count: int = 2, end_marker: str = END_OF_WORD
) -> list[Pair]:
    steps = bpe_steps(text, max_merges, min_count=min_count, end_marker=end_marker)
    return [step.pair for step in steps]


def apply_merges(word: str, merges: Sequence[Pair], end_marker: str = END_OF_WORD) -> list[str]:
    """Split a (possibly unseen) word with learned merges, applied in the order learned."""
    symbols: Word = tuple(word) + ((end_marker,) if end_marker else ())
    for pair in merges:
        symbols = merge_word(symbols, pair)
    return list(symbols)
