"""Requests to one engine take turns in the order they came (the engine's own lock is not
fair), and a request whose client left gives up its place."""

from __future__ import annotations

import threading
import time

from core.errors import Cancelled
from core.serve.fair import FairQueue


def _wait_for(queue: FairQueue, waiting: int) -> None:
    deadline = time.monotonic() + 5
    while queue.waiting != waiting:
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_turns_follow_the_order_of_arrival() -> None:
    queue = FairQueue()
    queue.acquire()
    served: list[int] = []

    def request(n: int) -> None:
        queue.acquire()
        served.append(n)
        queue.release()

    threads = []
    for n in range(8):
        t = threading.Thread(target=request, args=(n,))
        t.start()
        threads.append(t)
        _wait_for(queue, n + 1)  # n+1 in line: the arrival order is known
    queue.release()
    for t in threads:
        t.join(5)
    assert served == list(range(8))
    assert not queue.busy


def test_a_request_whose_client_left_gives_up_its_place() -> None:
    queue = FairQueue()
    queue.acquire()
    left = threading.Event()
    outcome: list[str] = []

    def leaving() -> None:
        try:
            queue.acquire(left.is_set)
            outcome.append("served")
        except Cancelled:
            outcome.append("left")

    t = threading.Thread(target=leaving)
    t.start()
    _wait_for(queue, 1)
    left.set()
    t.join(5)
    assert outcome == ["left"] and queue.waiting == 0
    queue.release()
    assert not queue.busy  # nobody holds a turn the client never took
