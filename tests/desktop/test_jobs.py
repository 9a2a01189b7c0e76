"""The job runner: one outcome per job, superseded jobs silent, cancel never an error."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from core.errors import Cancelled

WAIT = 5000


class Log:
    """Every callback of a job, in order, as (name, value)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_result": lambda v: self.calls.append(("result", v)),
            "on_partial": lambda v: self.calls.append(("partial", v)),
            "on_progress": lambda f, t: self.calls.append(("progress", (f, t))),
            "on_error": lambda e: self.calls.append(("error", e)),
            "on_cancelled": lambda p: self.calls.append(("cancelled", p)),
            "on_done": lambda: self.calls.append(("done", None)),
        }

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def gated(gate: threading.Event, value: object, *, partial: object = None):
    """A job that reports, waits for the test's gate, then returns ``value``."""

    def job_fn(job) -> object:
        job.progress(0.5, "half")
        if partial is not None:
            job.partial(partial)
        gate.wait(10)
        return value

    return job_fn


def test_result_reaches_only_on_result_then_on_done(qtbot, ctx) -> None:
    log = Log()
    gate = threading.Event()
    gate.set()
    worker = ctx.jobs.run(gated(gate, 42, partial="p"), **log.callbacks())
    qtbot.waitUntil(lambda: worker.is_done, timeout=WAIT)
    assert log.calls == [("progress", (0.5, "half")), ("partial", "p"), ("result", 42),
                         ("done", None)]


def test_unknown_progress_arrives_as_none(qtbot, ctx) -> None:
    seen: list[object] = []
    worker = ctx.jobs.run(lambda job: job.progress(None, "working"),
                          on_progress=lambda f, t: seen.append((f, t)))
    qtbot.waitUntil(lambda: worker.is_done, timeout=WAIT)
    assert seen == [(None, "working")]


def test_error_goes_to_on_error_or_to_the_status_bar(qtbot, ctx) -> None:
    def boom(job) -> None:
        raise ValueError("boom")

    log = Log()
    worker = ctx.jobs.run(boom, **log.callbacks())
    qtbot.waitUntil(lambda: worker.is_done, timeout=WAIT)
    assert log.names() == ["error", "done"] and str(log.calls[0][1]) == "boom"
    # Without on_error the context's default shows a sentence: never silence.
    with qtbot.waitSignal(ctx.bus.error, timeout=WAIT) as shown:
        ctx.jobs.run(boom)
    assert "boom" in shown.args[0]


def test_cancel_runs_only_on_cancelled_with_the_partial(qtbot, ctx) -> None:
    started = threading.Event()

    def stream(job) -> None:
        started.set()
        while not job.cancelled:
            threading.Event().wait(0.005)
        raise Cancelled(partial="half an answer")

    log = Log()
    worker = ctx.jobs.run(stream, **log.callbacks())
    assert started.wait(5)
    worker.cancel()
    qtbot.waitUntil(lambda: worker.is_done, timeout=WAIT)
    assert log.calls == [("cancelled", "half an answer"), ("done", None)]


@pytest.mark.parametrize("outcome", ["raise", "return"])
def test_a_cancelled_job_that_fails_or_finishes_anyway_is_still_cancelled(qtbot, ctx,
                                                                           outcome: str) -> None:
    gate = threading.Event()

    def job_fn(job) -> str:
        gate.wait(10)
        if outcome == "raise":
            raise ConnectionError("stream closed by the cancel")
        return "all of it"

    log = Log()
    interrupted: list[bool] = []

    def interrupt() -> None:
        interrupted.append(True)
        gate.set()

    worker = ctx.jobs.run(job_fn, interrupt=interrupt, **log.callbacks())
    worker.cancel()
    qtbot.waitUntil(lambda: worker.is_done, timeout=WAIT)
    expected = None if outcome == "raise" else "all of it"
    assert interrupted == [True]
    assert log.calls == [("cancelled", expected), ("done", None)]


def test_a_superseded_job_never_calls_back(qtbot, ctx) -> None:
    slow_gate, fast_gate = threading.Event(), threading.Event()
    fast_gate.set()
    slow_log, fast_log = Log(), Log()
    slow = ctx.jobs.run(gated(slow_gate, "old input", partial="old partial"), group="view",
                        **slow_log.callbacks())
    fast = ctx.jobs.run(gated(fast_gate, "new input"), group="view", **fast_log.callbacks())
    assert slow.job.cancelled and not fast.job.cancelled
    qtbot.waitUntil(lambda: fast.is_done, timeout=WAIT)
    slow_gate.set()  # the old job ends only now, after the new one painted
    qtbot.waitUntil(lambda: slow.is_done, timeout=WAIT)
    assert slow_log.calls == []
    assert fast_log.names() == ["progress", "result", "done"]
    assert fast_log.calls[1] == ("result", "new input")


def test_groups_are_independent(qtbot, ctx) -> None:
    gate = threading.Event()
    gate.set()
    a, b = Log(), Log()
    wa = ctx.jobs.run(gated(gate, "a"), group="left", **a.callbacks())
    wb = ctx.jobs.run(gated(gate, "b"), group="right", **b.callbacks())
    qtbot.waitUntil(lambda: wa.is_done and wb.is_done, timeout=WAIT)
    assert ("result", "a") in a.calls and ("result", "b") in b.calls


def test_cancel_group_and_busy_count(qtbot, ctx) -> None:
    gate = threading.Event()
    counts: list[int] = []
    ctx.jobs.busy_changed.connect(counts.append)
    log = Log()
    worker = ctx.jobs.run(gated(gate, "x"), group="g", **log.callbacks())
    probe = ctx.jobs.run(gated(gate, "probe"), quiet=True)
    assert ctx.jobs.busy == 1  # the quiet probe is not the user's work
    ctx.jobs.cancel("g")
    gate.set()
    qtbot.waitUntil(lambda: worker.is_done and probe.is_done, timeout=WAIT)
    assert log.calls == [("progress", (0.5, "half")), ("cancelled", "x"), ("done", None)]
    assert counts == [1, 0] and ctx.jobs.busy == 0 and not ctx.jobs.running


def test_done_signal_fires_after_the_callbacks(qtbot, ctx) -> None:
    gate = threading.Event()
    gate.set()
    order: list[str] = []
    worker = ctx.jobs.run(gated(gate, 1), on_result=lambda _v: order.append("result"))
    worker.signals.done.connect(lambda: order.append("done-signal"))
    qtbot.waitUntil(lambda: worker.is_done, timeout=WAIT)
    assert order == ["result", "done-signal"]


@pytest.mark.parametrize("cancel_before_release", [True, False])
def test_held_jobs_start_after_release(qtbot, ctx, cancel_before_release: bool) -> None:
    ran: list[str] = []
    log = Log()
    ctx.jobs.hold()
    worker = ctx.jobs.run(lambda job: ran.append("ran"), **log.callbacks())
    if cancel_before_release:
        worker.cancel()
    assert ran == [] and len(ctx.jobs.running) == 1
    ctx.jobs.release()
    qtbot.waitUntil(lambda: worker.is_done, timeout=WAIT)
    if cancel_before_release:
        assert ran == [] and log.calls == [("cancelled", None), ("done", None)]
    else:
        assert ran == ["ran"] and log.names() == ["result", "done"]


def test_a_cancel_while_the_result_is_on_its_way_is_a_cancel(qtbot, ctx) -> None:
    log = Log()
    worker = ctx.jobs.run(lambda job: "found for the old input", **log.callbacks())
    assert worker.wait(5)  # the function ended; its outcome waits in the event queue
    worker.cancel()
    qtbot.waitUntil(lambda: worker.is_done, timeout=WAIT)
    assert log.calls == [("cancelled", "found for the old input"), ("done", None)]


def test_drop_silences_a_group_without_a_new_job(qtbot, ctx) -> None:
    gate = threading.Event()
    log, other = Log(), Log()
    worker = ctx.jobs.run(gated(gate, "stale"), group="detail", **log.callbacks())
    kept = ctx.jobs.run(gated(gate, "kept"), group="elsewhere", **other.callbacks())
    ctx.jobs.drop("detail")
    assert worker.job.cancelled and not kept.job.cancelled
    gate.set()
    qtbot.waitUntil(lambda: worker.is_done and kept.is_done, timeout=WAIT)
    assert log.calls == []
    assert ("result", "kept") in other.calls
    # the group works as before for the next job
    fresh = ctx.jobs.run(gated(gate, "fresh"), group="detail", **log.callbacks())
    qtbot.waitUntil(lambda: fresh.is_done, timeout=WAIT)
    assert ("result", "fresh") in log.calls


def test_thousands_of_progress_reports_and_partials_do_not_crash_the_app(qtbot, ctx) -> None:
    """A long answer streams thousands of partials. PySide6 6.12.0 on Python 3.11 dropped a
    reference to True on every Signal.emit, and the app aborted after ~600 of them."""
    import sys

    log = Log()
    before = sys.getrefcount(True)

    def chatty(job) -> int:
        for i in range(3000):
            job.progress(i / 3000, "token")
            job.partial(i)
        return 3000

    ctx.jobs.run(chatty, group="chatty", **log.callbacks())
    qtbot.waitUntil(lambda: "done" in log.names(), timeout=60000)
    assert ("result", 3000) in log.calls
    assert sys.getrefcount(True) >= before - 50  # not one lost per emit
