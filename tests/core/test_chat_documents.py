"""Chat grounded in a knowledge base: `corral chat REF --kb NAME` prints the answer's numbered
references (file, page, score) and stores them; passages the guard judges unsafe never reach
the prompt and the answer records why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.chat.llama_backend import LlamaCppBackend
from core.chat.params import GenerationParams
from core.chat.session import ChatSession
from core.chat.store import HistoryStore
from core.cli import main
from core.rag.store import close_stores
from core.safety.verdict import GuardVerdict

QUESTION = "How do planets move around the sun?"




def test_corral_chat_with_a_kb_prints_references_after_the_answer(
        handbook: Path, tiny_gguf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["chat", str(tiny_gguf), "--kb", "Handbook", "--max-tokens", "6",
            "--temperature", "0", QUESTION]
    assert main(argv) == 0
    out = capsys.readouterr().out
    answer, _, refs = out.partition("\nReferences:\n")
    assert answer.strip(), out  # the answer comes first ...
    lines = [line.strip() for line in refs.strip().splitlines()]
    # ... then the references, numbered, best first: file name, page, score
    assert lines[0].startswith("[1] guide.pdf, page 2 (score 0."), out
    assert all(line.startswith(f"[{n}] ") for n, line in enumerate(lines, 1))
    # stored with the answer, with the exact chunk text
    store = HistoryStore()
    [conv] = store.conversations()
    assert conv.kb == "Handbook"
    stored = store.messages(conv.id)[-1].citations
    assert stored[0]["text"] == "Planets orbit the sun along elliptical paths."
    assert (stored[0]["page"], stored[0]["chunk_index"], stored[0]["file_name"]) == (
        2, 1, "guide.pdf")
    assert Path(stored[0]["source"]) == handbook / "guide.pdf"

    # --json carries the same citations; --hits limits them
    assert main([*argv, "--json", "--hits", "1", "--no-save"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [c["n"] for c in got["citations"]] == [1]
    assert got["citations"][0]["page"] == 2


def test_corral_chat_with_an_unknown_kb_says_so(tiny_gguf: Path, capsys) -> None:
    assert main(["chat", str(tiny_gguf), "--kb", "Nothing", "hi"]) == 1
    assert "no knowledge base called 'Nothing'" in capsys.readouterr().err
    close_stores()


# --- the guard on retrieved passages (session level, scripted guard) ------------------------


class DocumentGuard:
    """Judges passages by a word in them; records what it was asked."""

    def __init__(self, bad_word: str) -> None:
        self.bad_word = bad_word
        self.asked: list[list[str]] = []

    def check_documents(self, chunks: list[str], *, conversation_id: str = ""
                        ) -> list[GuardVerdict]:
        self.asked.append(list(chunks))
        return [GuardVerdict("unsafe", ["S1"], ["Violent Crimes"], action="block",
                             direction="document") if self.bad_word in c else
                GuardVerdict("safe", direction="document") for c in chunks]

    def check_input(self, messages: Any, *, conversation_id: str = "") -> None:
        return None

    def check_output(self, messages: Any, *, conversation_id: str = "") -> None:
        return None


HITS = [
    {"text": "Attack the neighbour with a knife.", "source": "/d/bad.txt", "page": None,
     "chunk_index": 0, "score": 0.8},
    {"text": "Planets orbit the sun.", "source": "/d/guide.pdf", "page": 2, "chunk_index": 1,
     "score": 0.6},
]


def test_passages_the_guard_blocks_never_reach_the_prompt(tiny_gguf: Path) -> None:
    backend = LlamaCppBackend(tiny_gguf, n_ctx=1024, n_threads=1)
    guard = DocumentGuard("knife")
    session = ChatSession(backend, store=HistoryStore(), guard=guard, check_documents=True,
                          retrieval=lambda q: HITS,
                          params=GenerationParams(max_tokens=4, temperature=0.0))
    events = list(session.send("planets?"))
    prompt = events[0].prompt.exact_text
    assert "Planets orbit the sun." in prompt and "knife" not in prompt
    assert "[1] source: /d/guide.pdf, page 2" in prompt  # the kept passage is number 1
    final = events[-1].message
    [kept, left] = final.citations
    assert (kept["n"], kept["file_name"], kept["page"]) == (1, "guide.pdf", 2)
    assert left["left_out"] and left["n"] is None and left["text"] == ""
    assert left["verdict"]["categories"] == ["S1"] and left["file_name"] == "bad.txt"
    assert guard.asked == [[h["text"] for h in HITS]]

    # with document checks off the guard is not asked and both passages are cited
    session.check_documents = False
    final = list(session.send("again?"))[-1].message
    assert [c["n"] for c in final.citations] == [1, 2] and len(guard.asked) == 1
