"""Background work for the GUI, one way: ``ctx.jobs.run(fn, *args, group=..., on_result=...)``.

A job function runs in the thread pool and receives a ``Job`` first: it reports with
``job.progress(fraction, text)`` and ``job.partial(obj)``, and checks ``job.cancelled`` (or
calls ``job.check()``, which raises Cancelled). Its outcome reaches the GUI thread only through
a queued signal, where the runner calls exactly one of the page's callbacks:

- ``on_result(value)`` when it returned and nobody cancelled it;
- ``on_error(exc)`` when it raised (the runner's default shows the sentence in the status bar);
- ``on_cancelled(partial)`` when it was cancelled, however it then ended: cancellation is never
  an error. ``partial`` is what the job returned, or what it raised ``Cancelled(partial=...)``
  with, or None;

then ``on_done()``. A job cancelled after its function ended, while the outcome was on its
way, is cancelled too. Each group has a generation counter: starting a job cancels the group's
older ones, and a superseded job's callbacks (partials and progress included) never run, so
old input is never painted; ``drop(group)`` does the same without a new job. In the spirit of
Anki's ``QueryOp``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from core.errors import Cancelled

log = logging.getLogger("corral.jobs")

R = TypeVar("R")

#: the outcome of a job function as it crosses to the GUI thread
RESULT, ERROR, CANCELLED = "result", "error", "cancelled"


class WorkerSignals(QObject):
    progress = Signal(float, str)  # fraction (-1: unknown), text
    partial = Signal(object)
    ended = Signal(str, object)  # RESULT/ERROR/CANCELLED, value (from the worker thread)
    done = Signal()  # on the GUI thread, after the page's callbacks ran (or were skipped)


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


class Worker(QRunnable, Generic[R]):
    """One run of ``fn(job, *args)`` in the pool, and the page's callbacks for it."""

    def __init__(self, fn: Callable[..., R], args: tuple[Any, ...],
                 callbacks: Callbacks[R], interrupt: Callable[[], object] | None) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.fn = fn
        self.args = args
        self.callbacks = callbacks
        self.interrupt = interrupt
        self.signals = WorkerSignals()
        self.job = Job(self.signals)
        self.group: str | None = None
        self.generation = 0
        self._ran = threading.Event()  # the function has returned or raised (or never will)
        self._done = False  # the GUI thread has dispatched the outcome

    def run(self) -> None:
        try:
            result = self.fn(self.job, *self.args)
        except Cancelled as exc:
            self._end(CANCELLED, exc.partial)
        except Exception as exc:
            if self.job.cancelled:  # e.g. a stream closed by the cancel itself
                log.debug("cancelled job %s ended with %r", _name(self.fn), exc)
                self._end(CANCELLED, None)
            else:
                # The page shows the error as a sentence; the log keeps the traceback.
                log.info("job %s failed", _name(self.fn), exc_info=True)
                self._end(ERROR, exc)
        else:
            self._end(CANCELLED if self.job.cancelled else RESULT, result)

    def _end(self, kind: str, value: object) -> None:
        self._ran.set()
        self.signals.ended.emit(kind, value)

    def skip(self) -> None:
        """End a job that was cancelled before it ever started, without running it."""
        self._end(CANCELLED, None)

    def cancel(self) -> None:
        """Ask the job to stop; its page hears of it through ``on_cancelled`` only."""
        self.job.cancel()
        if self.interrupt is not None:
            try:
                self.interrupt()
            except Exception:  # an interrupt is best effort: the job also polls ``cancelled``
                log.warning("interrupting job %s failed", _name(self.fn), exc_info=True)

    @property
    def is_done(self) -> bool:
        """The outcome has reached the GUI thread (the page's callbacks have run)."""
        return self._done

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the function has returned or raised (shutdown and tests only)."""
        return self._ran.wait(timeout)


class Callbacks(Generic[R]):
    """The page's side of one job; every callback runs on the GUI thread."""

    def __init__(self, on_result: Callable[[R], object] | None = None,
                 on_partial: Callable[[Any], object] | None = None,
                 on_progress: Callable[[float | None, str], object] | None = None,
                 on_error: Callable[[BaseException], object] | None = None,
                 on_cancelled: Callable[[Any], object] | None = None,
                 on_done: Callable[[], object] | None = None) -> None:
        self.on_result = on_result
        self.on_partial = on_partial
        self.on_progress = on_progress
        self.on_error = on_error
        self.on_cancelled = on_cancelled
        self.on_done = on_done


class JobRunner(QObject):
    """Starts jobs, keeps a generation per group, and routes each outcome to one callback."""

    busy_changed = Signal(int)  # number of running jobs the user started

    def __init__(self, pool: QThreadPool | None = None, parent: QObject | None = None,
                 on_error: Callable[[BaseException], object] | None = None) -> None:
        super().__init__(parent)
        self.pool = pool or QThreadPool.globalInstance()
        self.on_error = on_error  # for jobs started without their own
        self._generations: dict[str, int] = {}
        self._running: dict[Worker[Any], bool] = {}  # worker -> counts as the user's work
        self._held: list[Worker[Any]] | None = None

    def run(self, fn: Callable[..., R], *args: Any, group: str | None = None,
            on_result: Callable[[R], object] | None = None,
            on_partial: Callable[[Any], object] | None = None,
            on_progress: Callable[[float | None, str], object] | None = None,
            on_error: Callable[[BaseException], object] | None = None,
            on_cancelled: Callable[[Any], object] | None = None,
            on_done: Callable[[], object] | None = None,
            interrupt: Callable[[], object] | None = None,
            quiet: bool = False) -> Worker[R]:
        """Run ``fn(job, *args)`` in the pool; the callbacks run on the GUI thread.

        ``group``: a newer job of the same group supersedes this one (cancelled, and none of
        its callbacks run). ``interrupt``: called on cancel, to break a blocking call (close a
        stream). ``quiet``: not counted as the user's work in the status bar (a probe).
        """
        callbacks = Callbacks(on_result, on_partial, on_progress, on_error, on_cancelled,
                              on_done)
        worker: Worker[R] = Worker(fn, args, callbacks, interrupt)
        if group is not None:
            worker.group = group
            worker.generation = self._generations[group] = self._generations.get(group, 0) + 1
            for other in list(self._running):
                if other.group == group:
                    other.cancel()
        worker.signals.partial.connect(lambda obj, w=worker: self._partial(w, obj))
        worker.signals.progress.connect(lambda f, text, w=worker: self._progress(w, f, text))
        worker.signals.ended.connect(lambda kind, value, w=worker: self._ended(w, kind, value))
        self._running[worker] = not quiet
        if self._held is not None:
            self._held.append(worker)
        else:
            self.pool.start(worker)
        if not quiet:
            self.busy_changed.emit(self.busy)
        return worker

    def is_current(self, worker: Worker[Any]) -> bool:
        """No newer job of its group has started since."""
        return worker.group is None or self._generations.get(worker.group) == worker.generation

    def _partial(self, worker: Worker[Any], obj: object) -> None:
        if worker.callbacks.on_partial is not None and self.is_current(worker):
            worker.callbacks.on_partial(obj)

    def _progress(self, worker: Worker[Any], fraction: float, text: str) -> None:
        if worker.callbacks.on_progress is not None and self.is_current(worker):
            worker.callbacks.on_progress(None if fraction < 0 else fraction, text)

    def _ended(self, worker: Worker[Any], kind: str, value: Any) -> None:
        counted = self._running.pop(worker, False)
        if worker.job.cancelled and kind != CANCELLED:
            # cancelled after the function ended, while its outcome was on its way here
            kind, value = CANCELLED, value if kind == RESULT else None
        try:
            if self.is_current(worker):
                self._dispatch(worker.callbacks, kind, value)
        finally:
            worker._done = True
            if counted:
                self.busy_changed.emit(self.busy)
            worker.signals.done.emit()

    def _dispatch(self, cb: Callbacks[Any], kind: str, value: Any) -> None:
        if kind == RESULT:
            if cb.on_result is not None:
                cb.on_result(value)
        elif kind == CANCELLED:
            if cb.on_cancelled is not None:
                cb.on_cancelled(value)
        else:
            handler = cb.on_error or self.on_error
            if handler is not None:
                handler(value)
            else:
                log.error("job failed and nobody handles it", exc_info=value)
        if cb.on_done is not None:
            cb.on_done()

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

    @property
    def busy(self) -> int:
        return sum(self._running.values())

    @property
    def running(self) -> list[Worker[Any]]:
        return list(self._running)

    def cancel(self, group: str) -> None:
        """Cancel the running jobs of ``group``; their pages hear it through ``on_cancelled``."""
        for worker in list(self._running):
            if worker.group == group:
                worker.cancel()

    def drop(self, group: str) -> None:
        """Cancel the jobs of ``group`` as if a newer job had superseded them: none of their
        callbacks run (for when what they would paint no longer applies)."""
        self._generations[group] = self._generations.get(group, 0) + 1
        self.cancel(group)

    def cancel_all(self) -> None:
        for worker in list(self._running):
            worker.cancel()
        if self._held is not None:
            self.release()  # every held job is cancelled now: each ends without running

    def wait_all(self, timeout_ms: int = 30000) -> bool:
        """Cancel nothing; wait until every job has ended (used at shutdown and in tests)."""
        return self.pool.waitForDone(timeout_ms)


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", repr(fn))
