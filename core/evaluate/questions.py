"""Questions a chat model writes about sampled chunks: queries in the user's own words, for
when verbatim sentences are too easy. Each question is labelled with the chunk it was written
about. The chunks are drawn with the seed, and the model answers greedily (temperature 0),
so the same model writes the same questions every run.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from core.errors import CorralError
from core.evaluate.contestants import Progress
from core.evaluate.dataset import SEED, Passage, Query

N_QUESTIONS = 20
MAX_PASSAGE_CHARS = 1200
#: (SmolLM2-135M follows this wording; "one short question ..." made it chat instead)
PROMPT = "Text: {passage}\n\nWrite a question about this text."
_QUESTION = re.compile(r"[^?.!\n]*\?")
_LEAD = re.compile(r"^\s*(?:question\s*\d*\s*[:.-]\s*|\d+[.)]\s*|[-*\"'“]\s*)", re.IGNORECASE)
#: questions about the task, not the text
_ABOUT_TASK = ("this question", "the answer to", "this text answer")


def _quiet(_fraction: float, _text: str) -> None:
    return None


def clean_question(text: str) -> str:
    """The first real question of a reply (no 'Question:' lead, quotes or questions about
    the task itself); '' when there is none."""
    for found in _QUESTION.findall(text):
        q = _LEAD.sub("", found).strip().strip("\"'“”").strip()
        if len(q.split()) >= 3 and not any(t in q.lower() for t in _ABOUT_TASK):
            return q
    return ""


def written_questions(model: str | Path, corpus: list[Passage], *, n: int = N_QUESTIONS,
                      seed: int = SEED, n_threads: int | None = None,
                      progress: Progress = _quiet) -> list[Query]:
    """Up to ``n`` questions ``model`` (a chat GGUF, run in the engine child) writes about
    chunks drawn with ``seed``; replies that are not a question are left out."""
    from core.chat.llama_backend import LlamaCppBackend
    from core.chat.params import GenerationParams
    from core.prompts.base import Message

    if not corpus:
        return []
    backend = LlamaCppBackend(model, n_ctx=1024, n_threads=n_threads)
    picks = sorted(random.Random(seed).sample(range(len(corpus)), min(n, len(corpus))))
    params = GenerationParams(temperature=0.0, max_tokens=48, seed=seed).validate()
    fmt = backend.info().format  # the prompt format Corral picks for this model
    out: list[Query] = []
    for done, i in enumerate(picks):
        progress(done / len(picks), f"{Path(model).name}: writing question {done + 1} of "
                 f"{len(picks)}")
        passage = corpus[i]
        prompt = backend.prepare(
            [Message("user", PROMPT.format(passage=passage.text[:MAX_PASSAGE_CHARS]))],
            fmt, "defuse")
        reply = "".join(ev.text for ev in backend.stream(prompt, params) if not ev.done)
        question = clean_question(reply)
        if question:
            out.append(Query(question, passage.source, labels=((passage.id, 1.0),)))
    if not out:
        raise CorralError(f"{Path(model).name} wrote no usable questions",
                          hint="Pick a larger chat model, or leave the questions out.")
    return out
