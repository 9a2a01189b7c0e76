"""Streamed text reaches the page in batches, and never waits for a token that does not come:
a model that stalls after a few tokens still shows them."""

from __future__ import annotations

import threading
import time
from typing import Any

from desktop.pages.chat import jobs as chat_jobs
from desktop.pages.chat.jobs import BATCH_S, Batcher


class Sink:
    """What the page would receive (the job's partials), with when."""

    def __init__(self) -> None:
        self.got: list[tuple[float, Any]] = []
        self.came = threading.Event()

    def partial(self, update: Any) -> None:
        self.got.append((time.monotonic(), update))
        self.came.set()


def test_tokens_before_a_stall_are_shown_without_the_next_token() -> None:
    sink = Sink()
    batch = Batcher(sink)  # type: ignore[arg-type]
    batch.add("They ", 1)  # the first goes at once
    batch.add("deserve ", 2)
    batch.add("bread.", 3)
    stalled = time.monotonic()  # ... and the model says nothing more
    assert sink.came.wait(5)
    deadline = time.monotonic() + 5
    while "".join(u[1] for _t, u in sink.got) != "They deserve bread." and time.monotonic() < deadline:
        time.sleep(0.005)
    assert [u for _t, u in sink.got][-1] == ("delta", "deserve bread.", 3)
    assert sink.got[-1][0] - stalled < BATCH_S + 0.5  # the timer sent them, not a next token
    batch.flush()  # the turn ends: nothing is left to send twice
    assert len(sink.got) == 2


def test_a_held_answer_reports_its_count_and_a_busy_stream_is_batched(monkeypatch) -> None:
    monkeypatch.setattr(chat_jobs, "BATCH_S", 0.2)
    sink = Sink()
    batch = Batcher(sink)  # type: ignore[arg-type]
    for n in range(1, 51):  # 50 held tokens in well under 0.2 s
        batch.add("", n)
    batch.flush()
    assert [u for _t, u in sink.got] == [("held", "", 1), ("held", "", 50)]
