"""First come, first served turns on one engine: requests to the same model wait in order of
arrival (the engine's own lock is not fair), and a request whose client left leaves the line."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from core.errors import Cancelled

POLL_S = 0.05


class FairQueue:
    """One holder at a time; the others wait in a FIFO line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = False
        self._line: deque[threading.Event] = deque()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._line)

    @property
    def busy(self) -> bool:
        return self._busy

    def acquire(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Wait for this caller's turn; Cancelled if ``cancelled()`` turns true first."""
        with self._lock:
            if not self._busy and not self._line:
                self._busy = True
                return
            turn = threading.Event()
            self._line.append(turn)
        while not turn.wait(POLL_S):
            if cancelled():
                with self._lock:
                    if not turn.is_set():
                        self._line.remove(turn)
                        raise Cancelled("the client left while waiting for the model")
                break  # handed the turn at the same moment: take it, then give it back
        if cancelled():
            self.release()
            raise Cancelled("the client left while waiting for the model")

    def release(self) -> None:
        """Hand the turn to the next in line (the engine stays busy), or free it."""
        with self._lock:
            if self._line:
                self._line.popleft().set()
            else:
                self._busy = False


class FairQueues:
    """One FairQueue per key (a model reference, an embedder)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, FairQueue] = {}

    def __call__(self, key: str) -> FairQueue:
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = FairQueue()
            return queue
