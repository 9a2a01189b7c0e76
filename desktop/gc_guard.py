"""Run Python's cyclic garbage collector on the GUI thread only.

Qt objects must be destroyed in the thread that owns them. Python's collector can run in
any thread that happens to allocate, so a worker thread could free a cycle holding a
widget and crash the process. The usual cure (as in napari and Spyder): turn automatic
collection off and collect from a timer on the GUI thread, as often as the thresholds
would have.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

INTERVAL_MS = 200


class MainThreadCollector(QObject):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.threshold = gc.get_threshold()
        gc.disable()
        self.timer = QTimer(self)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self.check)
        self.timer.start()

    def check(self) -> None:
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > self.threshold[generation]:
                gc.collect(generation)
                return

    def stop(self) -> None:
        self.timer.stop()
        gc.enable()


_collector: MainThreadCollector | None = None


def install(parent: QObject) -> MainThreadCollector:
    """Once per process: collect garbage on the GUI thread from now on."""
    global _collector
    if _collector is None:
        _collector = MainThreadCollector(parent)
    return _collector
