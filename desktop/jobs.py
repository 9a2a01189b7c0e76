"""Background jobs for the GUI: a QRunnable with typed signals and cooperative cancel.

A job function runs in the thread pool and receives a ``Job`` first: it reports with
``job.progress(fraction, text)`` and ``job.partial(obj)``, and checks ``job.cancelled`` (or
calls ``job.check()``, which raises Cancelled). Results and errors reach the GUI thread only
through queued signals; workers never touch widgets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from core.errors import Cancelled

log = logging.getLogger("corral.worker")


class WorkerSignals(QObject):
    progress = Signal(float, str)  # fraction (-1: unknown), text
    partial = Signal(object)
    finished = Signal(object)  # the function's return value
    failed = Signal(object)  # the exception
    done = Signal()  # after finished or failed (or cancel), always


class Job:
    """What a job function sees of its worker."""

    def __init__(self, signals: WorkerSignals) -> None:
        self._signals = signals
        self._cancel = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled")

    def progress(self, fraction: float | None, text: str = "") -> None:
        self._signals.progress.emit(-1.0 if fraction is None else float(fraction), text)

    def partial(self, obj: Any) -> None:
        self._signals.partial.emit(obj)


class Worker(QRunnable):
    """Run ``fn(job, *args, **kwargs)`` in the global thread pool."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.signals = WorkerSignals()
        self.job = Job(self.signals)
        self.on_cancel: Callable[[], None] | None = None  # e.g. EngineClient.cancel
        self._finished = threading.Event()

    def run(self) -> None:
        try:
            result = self.fn(self.job, *self.args, **self.kwargs)
        except Cancelled as exc:
            self.signals.failed.emit(exc)
        except Exception as exc:
            # The page shows the error as a sentence; the log keeps the traceback.
            log.info("job %s failed", getattr(self.fn, "__name__", self.fn), exc_info=True)
            self.signals.failed.emit(exc)
        else:
            self.signals.finished.emit(result)
        finally:
            self._finished.set()
            self.signals.done.emit()

    def skip(self) -> None:
        """End a job that was cancelled before it ever started, without running it."""
        self.signals.failed.emit(Cancelled("cancelled"))
        self._finished.set()
        self.signals.done.emit()

    def cancel(self) -> None:
        self.job.cancel()
        if self.on_cancel is not None:
            try:
                self.on_cancel()
            except Exception:
                log.debug("on_cancel failed", exc_info=True)

    @property
    def is_done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)


class JobRunner(QObject):
    """Starts workers, remembers the running ones, and cancels per group."""

    busy_changed = Signal(int)  # number of running jobs

    def __init__(self, pool: QThreadPool | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = pool or QThreadPool.globalInstance()
        self._running: dict[Worker, str | None] = {}
        self._held: list[Worker] | None = None

    def start(self, worker: Worker, group: str | None = None) -> Worker:
        """Start ``worker``; a previous job of the same group is cancelled first."""
        if group is not None:
            for other, g in list(self._running.items()):
                if g == group:
                    other.cancel()
        self._running[worker] = group
        worker.signals.done.connect(lambda w=worker: self._forget(w))
        if self._held is not None:
            self._held.append(worker)
        else:
            self.pool.start(worker)
        self.busy_changed.emit(len(self._running))
        return worker

    def hold(self) -> None:
        """Queue new jobs instead of starting them (while the window paints the first time)."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """Start the queued jobs that were not cancelled meanwhile."""
        held, self._held = self._held or [], None
        for worker in held:
            if worker.job.cancelled:
                worker.skip()
            else:
                self.pool.start(worker)

    def _forget(self, worker: Worker) -> None:
        if self._running.pop(worker, "missing") != "missing":
            self.busy_changed.emit(len(self._running))

    @property
    def running(self) -> list[Worker]:
        return list(self._running)

    def cancel_all(self) -> None:
        for w in list(self._running):
            w.cancel()
        if self._held is not None:
            self.release()  # every held job is cancelled now: each ends without running

    def wait_all(self, timeout_ms: int = 30000) -> bool:
        """Cancel nothing; wait until every job has ended (used at shutdown and in tests)."""
        return self.pool.waitForDone(timeout_ms)
