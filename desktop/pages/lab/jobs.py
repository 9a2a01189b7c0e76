"""What the Lab's job functions share: a progress reporter that crosses to the GUI thread at
most a few times a second, and the text loader.

Why the rate limit: besides sparing the event loop, each signal emitted costs PySide6 6.12 on
Python 3.11 a reference to True (a refcount bug in Signal.emit), so a trainer that reported
every batch would end the process after some hundreds of reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.config import Settings
from desktop.jobs import Job

if TYPE_CHECKING:
    from core.lab.corpus import LabText

INTERVAL_S = 0.25


def reporter(job: Job, interval: float = INTERVAL_S) -> Callable[[float, str], None]:
    """``job.progress`` at most once per ``interval`` (always for the first call, the end, and
    an unknown fraction, which is shown as busy)."""
    last = [0.0]

    def report(fraction: float, text: str) -> None:
        now = time.monotonic()
        if fraction >= 1.0 or fraction < 0 or now - last[0] >= interval:
            last[0] = now
            job.progress(None if fraction < 0 else fraction, text)

    return report


def load_text(job: Job, source: tuple[str, str], settings: Settings) -> LabText:
    from core.lab import corpus

    return corpus.load(*source, settings=settings, progress=reporter(job),
                       cancelled=lambda: job.cancelled)
