"""The status bar: whether Ollama answers at the configured host, whether work runs, and
where the local API serves."""

from __future__ import annotations

import json
import urllib.request

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QMainWindow, QStatusBar

from desktop.context import AppContext
from desktop.jobs import Job, Worker

PROBE_INTERVAL_MS = 15000


def probe_ollama(job: Job, host: str, timeout: float) -> str:
    """The server's version, or raise; runs in a worker (never on the GUI thread)."""
    with urllib.request.urlopen(f"{host}/api/version", timeout=timeout) as resp:  # noqa: S310
        return str(json.loads(resp.read().decode("utf-8")).get("version", "?"))


class StatusBar(QStatusBar):
    def __init__(self, ctx: AppContext, window: QMainWindow) -> None:
        super().__init__(window)
        self.ctx = ctx
        self.ollama = QLabel("Ollama: checking…")
        self.ollama.setObjectName("ollamaStatus")
        self.busy = QLabel("Idle")
        self.busy.setObjectName("busyStatus")
        self.addPermanentWidget(self.busy)
        self.addPermanentWidget(self.ollama)
        from desktop.serve import serve_status

        self.api = serve_status(ctx, self)  # the local API (issue 18): address, off or error
        self.addPermanentWidget(self.api)
        ctx.jobs.busy_changed.connect(self._on_busy)
        ctx.bus.status_message.connect(lambda text, ms: self.showMessage(text, ms))
        ctx.bus.error.connect(lambda text: self.showMessage("⚠ " + text, 12000))
        ctx.bus.settings_changed.connect(self.check_ollama)
        self._probe: Worker[str] | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(PROBE_INTERVAL_MS)
        self.timer.timeout.connect(self.check_ollama)
        self.timer.start()
        QTimer.singleShot(0, self.check_ollama)

    def host(self) -> str:
        from core.models.ollama_host import resolve_host

        return resolve_host(self.ctx.settings.ollama.host)

    def check_ollama(self) -> None:
        if self._probe is not None and not self._probe.is_done:
            return
        host = self.host()
        # quiet: a probe is not work the user started, so "Working" does not count it
        self._probe = self.ctx.jobs.run(
            probe_ollama, host, 2.0, group="status-ollama", quiet=True,
            on_result=lambda v: self._set_ollama(f"Ollama {v} at {host}", True),
            on_error=lambda _e: self._set_ollama(f"Ollama not running at {host}", False),
            on_cancelled=lambda _p: None)

    def _set_ollama(self, text: str, up: bool) -> None:
        self.ollama.setText(("● " if up else "○ ") + text)
        self.ollama.setProperty("up", up)
        self.ollama.setStyleSheet("color: #2e7d32;" if up else "color: #9e9e9e;")

    def _on_busy(self, n: int) -> None:
        self.busy.setText("Idle" if n == 0 else f"Working: {n} job{'s' if n > 1 else ''}")

    def shutdown(self) -> None:
        self.timer.stop()
        if self._probe is not None:
            self._probe.wait(3)
