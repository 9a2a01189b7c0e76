"""Chat on real weights (SmolLM2-135M-Instruct, its own ChatML template through the `model`
format): answers end on the model's real end-of-turn token with nothing of the template
leaking, greedy answers repeat across processes and engine restarts, and Stop keeps what came.

Random weights prove plumbing; these prove behaviour. Without the model's package the
``smollm2`` fixture fails with a message naming it (never a skip).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.chat.llama_backend import LlamaCppBackend
from core.chat.params import GenerationParams
from core.chat.session import ChatEvent, ChatSession
from core.chat.store import HistoryStore

pytestmark = pytest.mark.real_model

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of France? Answer in one word."
TEMPLATE_TEXT = ("<|im_end|>", "<|im_start|>", "<|endoftext|>")

#: The same turn in a fresh Python process: prints the answer and how it ended, as JSON.
SCRIPT = """
import json, sys
from core.chat.llama_backend import LlamaCppBackend
from core.chat.params import GenerationParams
from core.chat.session import ChatSession
from core.chat.store import HistoryStore
from core.models.pool import close_all

backend = LlamaCppBackend(sys.argv[1], n_ctx=1024, n_threads=1)
session = ChatSession(backend, store=HistoryStore(), fmt="model",
                      params=GenerationParams(max_tokens=24, temperature=0.0, seed=7))
final = list(session.send(sys.argv[2]))[-1].message
print(json.dumps([final.content, final.finish_reason]))
close_all()
"""


@pytest.fixture(scope="module")
def backend(smollm2: Path) -> Iterator[LlamaCppBackend]:
    from core.models.pool import close_all

    yield LlamaCppBackend(smollm2, n_ctx=1024, n_threads=1)
    close_all()


def turn(backend: LlamaCppBackend, question: str = QUESTION) -> list[ChatEvent]:
    session = ChatSession(backend, store=HistoryStore(), fmt="model",
                          params=GenerationParams(max_tokens=24, temperature=0.0, seed=7))
    return list(session.send(question))


def test_an_answer_ends_on_the_real_end_of_turn_token(backend: LlamaCppBackend) -> None:
    events = turn(backend)
    final = events[-1].message
    assert final is not None
    streamed = "".join(e.text for e in events if e.kind == "delta")
    assert final.content == streamed
    assert "Paris" in final.content
    # It stopped by itself, well before max_tokens, on <|im_end|>: the template's own stop
    # list is empty, so only the model's end-of-generation token can have ended it.
    assert final.finish_reason == "stop" and 0 < final.completion_tokens < 24
    assert events[0].prompt is not None and events[0].prompt.stop == ()
    eos = int(backend.engine.load()["eos"])
    assert backend.engine.token_pieces([eos]) == [b"<|im_end|>"]
    assert not any(t in final.content for t in TEMPLATE_TEXT)
    assert not final.interrupted


def test_the_rendered_prompt_is_the_models_own_chatml(backend: LlamaCppBackend) -> None:
    prompt = turn(backend, "Hi!")[0].prompt
    assert prompt is not None
    assert prompt.exact_text.endswith("<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.exact_text.startswith("<|im_start|>system\n")  # the template's default


def test_greedy_answers_repeat_in_other_processes(backend: LlamaCppBackend, tmp_path: Path) -> None:
    here = turn(backend)[-1].message
    assert here is not None
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CORRAL_ENGINE_THREADS": "1"}
    answers = []
    for i in range(2):
        env["CORRAL_HOME"] = str(tmp_path / f"home-{i}")
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(backend.path), QUESTION],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        answers.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert answers[0] == answers[1] == [here.content, here.finish_reason]


def test_greedy_answers_repeat_after_an_engine_restart(backend: LlamaCppBackend) -> None:
    before = turn(backend)[-1].message
    pid = backend.engine.pid
    backend.engine.close()
    after = turn(backend)[-1].message  # a fresh child loads the model again
    assert backend.engine.pid not in (None, pid)
    assert before is not None and after is not None
    assert after.content == before.content and after.finish_reason == before.finish_reason


def test_the_same_greedy_request_twice_in_one_engine_gives_the_same_answer(
        backend: LlamaCppBackend) -> None:
    """Regenerate, or an API client asking again: the cached prompt is read anew."""
    answers = [turn(backend, "Say hello")[-1].message for _ in range(2)]
    assert answers[0] is not None and answers[1] is not None
    assert answers[0].content == answers[1].content


def test_regenerate_reads_only_the_last_batch_again_and_answers_the_same(
        backend: LlamaCppBackend) -> None:
    """A Regenerate in a long conversation must not read the whole conversation again, and
    must give the greedy answer it gave the first time: the same prompt is read again from
    where the batch that gave its last logits began (llama.cpp reads 512 tokens a batch)."""
    engine = backend.engine
    greedy = {"max_tokens": 12, "temperature": 0.0, "repeat_penalty": 1.0}

    def ask(ids: list[int]) -> tuple[str, int]:
        events = list(engine.generate(ids, **greedy))
        return "".join(e.text for e in events), int(events[-1].prompt_read or 0)

    story = " ".join(f"Llama number {i} lives in the Andes and eats grass." for i in range(60))
    first = engine.tokenize(f"{story}\nQuestion: where do llamas live?\nAnswer:", add_bos=True)
    assert 512 < len(first) < 1024
    engine.generate([1, 2, 3], max_tokens=1)  # something else in the cache first
    answer, read = ask(first)
    assert read == len(first)  # nothing of it was cached
    again, read = ask(first)  # Regenerate
    assert (again, read) == (answer, len(first) - 512)
    # the next turn reads only what is new; its Regenerate, only that again
    second = first + engine.tokenize(f"{answer}\nQuestion: and what do they eat?\nAnswer:")
    answer2, read2 = ask(second)
    assert read2 < len(second) - len(first) + 16
    assert ask(second) == (answer2, read2)
    # back to the first prompt: its reading is no longer the last one, so it is read whole
    assert ask(first) == (answer, len(first))


def test_stop_keeps_the_partial_answer(backend: LlamaCppBackend) -> None:
    session = ChatSession(backend, store=HistoryStore(), fmt="model",
                          params=GenerationParams(max_tokens=24, temperature=0.0, seed=7))
    seen: list[str] = []
    for ev in session.send("Tell me a long story about a dragon."):
        if ev.kind == "delta":
            seen.append(ev.text)
            if len(seen) == 1:
                session.cancel()
        final = ev.message
    assert final is not None
    assert final.finish_reason == "cancelled" and not final.interrupted
    assert final.content == "".join(seen) and final.content.strip()
    assert final.completion_tokens < 24
