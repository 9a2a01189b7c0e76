"""The API on the real SmolLM2-135M: greedy answers, streamed and not, equal `corral chat`'s for
the same request; twenty streaming clients at once all get their own right answer (they queue
fairly on the one engine); a client that hangs up mid-stream frees the engine within a second.

`corral chat` runs in a fresh process for the reference answers. Each question differs from the
one before it: llama.cpp reuses the cached prompt, and an identical prompt sent twice in a row
is re-read from its last token only, which can change a greedy answer (an engine matter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings
from core.models import library
from core.models.pool import close_all, engine_pool
from tests.core.serve_fixtures import client, serving

pytestmark = pytest.mark.real_model
ROOT = Path(__file__).resolve().parents[2]

ONE = ("What is the capital of France?", 8)
STREAMED = ("Name three colors.", 8)
#: the streamed request also sets stop, seed and top_p (greedy: seed and top_p change nothing)
STREAMED_OPTIONS = {"stop": ["Blue"], "seed": 7, "top_p": 0.5}
STREAMED_FLAGS = ["--stop", "Blue", "--seed", "7", "--top-p", "0.5"]
CROWD = [(q, 4) for q in (
    "Hello!", "Who wrote Hamlet?", "Describe the sea.", "Why is the sky blue?",
    "Give me a fruit.", "Tell me a joke.", "Count to five.", "Spell cat.", "Explain rain.",
    "List two planets.", "Define gravity.", "Suggest a name for a dog.", "Translate hello.",
    "Recommend a book.", "Summarize winter.", "Compare cats and dogs.", "Where is Paris?",
    "Is water wet?", "Can birds fly?", "Please say yes.")]

REFERENCE = """
import contextlib, io, json, sys
from core.cli import main
from core.models import library
library.import_file(sys.argv[1], name="smollm2")
answers = []
for question, n, flags in json.loads(sys.argv[2]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["chat", "smollm2", question, "-n", str(n), "-t", "0", "--no-save",
                     "--json", *flags]) == 0
    answers.append(json.loads(out.getvalue())["text"])
print(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def reference(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`corral chat`'s greedy answers, from a process of its own."""
    asked = [(*ONE, []), (*STREAMED, STREAMED_FLAGS), *((q, n, []) for q, n in CROWD)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CORRAL_ENGINE_THREADS": "1",
           "CORRAL_HOME": str(tmp_path_factory.mktemp("reference-home"))}
    out = subprocess.run([sys.executable, "-c", REFERENCE, str(smollm2), json.dumps(asked)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    answers = json.loads(out.stdout.strip().splitlines()[-1])
    return {q: a for (q, _n, _f), a in zip(asked, answers, strict=True)}


@pytest.fixture
def url(smollm2: Path) -> Iterator[str]:
    library.import_file(smollm2, name="smollm2")
    with serving(Settings()) as where:
        yield where


@pytest.fixture(scope="module", autouse=True)
def _engines() -> Iterator[None]:
    yield
    close_all()


def _ask(url: str, question: str, n: int, **kw: object) -> object:
    return client(url).chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": question}], max_tokens=n,
        temperature=0, **kw)


def _streamed_text(url: str, question: str, n: int, **kw: object) -> str:
    chunks = _ask(url, question, n, stream=True, **kw)
    return "".join(c.choices[0].delta.content or "" for c in chunks  # type: ignore[attr-defined]
                   if c.choices)


def test_answers_equal_corral_chats_streamed_and_not(url: str, reference: dict[str, str]
                                                     ) -> None:
    done = _ask(url, *ONE)
    assert done.choices[0].message.content == reference[ONE[0]]  # type: ignore[attr-defined]
    assert done.choices[0].finish_reason == "length"  # type: ignore[attr-defined]
    assert done.usage.completion_tokens == 8  # type: ignore[attr-defined]
    assert reference[ONE[0]].strip()
    assert _streamed_text(url, *STREAMED, **STREAMED_OPTIONS) == reference[STREAMED[0]]
    # without the stop string the answer is "1. Red\n2. Blue": it ended just before it
    assert reference[STREAMED[0]].startswith("1. Red") and "Blue" not in reference[STREAMED[0]]


def test_twenty_streaming_clients_all_get_their_answers(url: str, reference: dict[str, str]
                                                        ) -> None:
    got: dict[str, str] = {}
    failures: list[BaseException] = []

    def one(question: str, n: int) -> None:
        try:
            got[question] = _streamed_text(url, question, n)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=one, args=case) for case in CROWD]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures, failures[:3]
    assert got == {q: reference[q] for q, _n in CROWD}


def test_a_client_that_hangs_up_frees_the_engine_within_a_second(
        url: str, reference: dict[str, str], smollm2: Path) -> None:
    stream = _ask(url, "Tell me a long story about a dragon.", 400, stream=True)
    pieces = 0
    for chunk in stream:  # type: ignore[attr-defined]
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            if pieces == 3:
                break
    path = str(smollm2.resolve())

    def busy() -> bool:
        return any(m.busy for m in engine_pool().loaded() if m.path == path)

    assert busy()  # it was still answering
    stream.close()  # type: ignore[attr-defined]
    hung_up = time.monotonic()
    while busy() and time.monotonic() - hung_up < 5:
        time.sleep(0.01)
    assert time.monotonic() - hung_up < 1.0
    # the next request gets the engine and its own right answer
    assert _ask(url, *ONE).choices[0].message.content == reference[ONE[0]]  # type: ignore[attr-defined]
