"""Desktop tests: a fresh AppContext per test, and failure on leaked worker threads.

Qt warnings fail a test through pytest-qt's ``qt_log_level_fail`` (pyproject.toml).
"""

from __future__ import annotations

import gc
import threading
import time

import pytest
from PySide6.QtCore import QCoreApplication, QEvent, QThreadPool


@pytest.fixture(scope="session", autouse=True)
def collect_on_the_gui_thread(qapp):
    """As in the app: Python's collector never frees Qt objects on a worker thread."""
    from desktop import gc_guard

    collector = gc_guard.install(qapp)
    yield
    collector.stop()


@pytest.fixture
def ctx(qapp):
    from desktop.context import AppContext

    context = AppContext()
    yield context
    context.jobs.cancel_all()


@pytest.fixture(autouse=True)
def no_leaked_workers(qapp):
    before = {t.ident for t in threading.enumerate()}
    yield
    pool = QThreadPool.globalInstance()
    deadline = time.monotonic() + 0.5
    while pool.activeThreadCount() and time.monotonic() < deadline:
        qapp.processEvents()
        time.sleep(0.01)
    leaked_jobs = pool.activeThreadCount()
    pool.waitForDone(30000)  # do not let a leak poison the next test
    # Free this test's widgets now, on this thread, before the next test starts workers.
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()
    assert leaked_jobs == 0, f"test left {leaked_jobs} worker job(s) running"
    extra = [
        t for t in threading.enumerate()
        if t.ident not in before and not t.daemon and t.is_alive() and "Dummy" not in t.name
    ]
    assert not extra, f"test left threads running: {[t.name for t in extra]}"
