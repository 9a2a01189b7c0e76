"""The window's "Serve the local API" switch: runs core's API server (core.serve) inside this
process while the setting is on, so the window keeps owning the knowledge-base store.

Starting and stopping run in workers (uvicorn serves from its own thread), never on the GUI
thread; the state ("API: http://127.0.0.1:8484", off, error) is one signal the status bar
shows. One switch per app context: ``serve_switch(ctx)``."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, QTimer, Signal
from PySide6.QtWidgets import QLabel, QWidget

from desktop.context import AppContext, describe_error
from desktop.jobs import Job

log = logging.getLogger("corral.desktop")
GROUP = "serve-switch"


class _Servers:
    """Every server the switch started, changed one job at a time: a start stops the others
    first, so a superseded start never leaves a server holding the port."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: list[Any] = []

    def restart(self, settings: Any) -> Any:
        from core.serve.runner import ApiServer

        with self._lock:
            self._stop_all()
            server = ApiServer(settings)
            server.start()
            self._live.append(server)
            return server

    def stop_all(self) -> None:
        with self._lock:
            self._stop_all()

    def _stop_all(self) -> None:
        while self._live:
            self._live.pop().stop(timeout=5.0)


def _start(job: Job, servers: _Servers, settings: Any) -> Any:
    return servers.restart(settings)


def _stop(job: Job, servers: _Servers) -> None:
    servers.stop_all()


class ServeSwitch(QObject):
    """Starts, restarts and stops the API as the Serve settings say."""

    state_changed = Signal(str, str)  # state ('off', 'starting', 'on', 'error'), text

    def __init__(self, ctx: AppContext) -> None:
        super().__init__(ctx)
        self.ctx = ctx
        self.server: Any = None  #: the running one, once started
        self._servers = _Servers()
        self.state = "off"
        self.text = "API: off"
        self.problem = ""
        self._config: tuple[Any, ...] | None = None  # the Serve settings it runs with
        ctx.bus.settings_changed.connect(self.apply)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    def _set(self, state: str, text: str, problem: str = "") -> None:
        self.state, self.text, self.problem = state, text, problem
        self.state_changed.emit(state, text)

    def apply(self) -> None:
        """Match the settings: start, restart with new values, or stop."""
        serve = self.ctx.settings.serve
        config = tuple(dataclasses.astuple(serve))
        if not serve.enabled:
            self._config = None
            if self.server is not None or self.state != "off":
                self.server = None
                self.ctx.jobs.run(_stop, self._servers, group=GROUP, on_error=self._failed,
                                  on_cancelled=lambda _p: None)
                self._set("off", "API: off")
            return
        if config == self._config and self.state in ("on", "starting"):
            return
        self._config = config
        self.server = None
        self._set("starting", "API: starting…")
        self.ctx.jobs.run(_start, self._servers, self.ctx.settings, group=GROUP,
                          on_result=self._started, on_error=self._failed,
                          on_cancelled=lambda _p: None)

    def _started(self, server: Any) -> None:
        self.server = server
        self._set("on", f"API: {server.url}")

    def _failed(self, exc: BaseException) -> None:
        self._config = None
        sentence = describe_error(exc)
        self._set("error", "API: error", sentence)
        self.ctx.show_error(f"The local API is not running: {sentence}")

    def shutdown(self) -> None:
        """The app quits: stop serving now (running answers are cancelled)."""
        self.ctx.jobs.drop(GROUP)
        self.server = None
        self._servers.stop_all()
        self._config = None


def serve_switch(ctx: AppContext) -> ServeSwitch:
    """The context's one switch, made on first use."""
    switch = getattr(ctx, "_serve_switch", None)
    if switch is None:
        switch = ServeSwitch(ctx)
        ctx._serve_switch = switch  # type: ignore[attr-defined]
    return switch


def serve_fields(ctx: AppContext) -> tuple[QWidget, Any]:
    """The Settings page's group for the API: the switch and its host, port, token and
    history fields, and a function that writes them into the settings."""
    from PySide6.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QLineEdit, QSpinBox

    serve_switch(ctx)  # it follows the saved settings from now on
    s = ctx.settings.serve
    box = QGroupBox("Local API (OpenAI-compatible)")
    form = QFormLayout(box)
    enabled = QCheckBox("Serve the local API")
    enabled.setObjectName("serveEnabled")
    enabled.setChecked(s.enabled)
    enabled.setToolTip("While the window runs, OpenAI clients can use Corral's models, guard "
                       "and knowledge bases at this address.")
    host = QLineEdit(s.host)
    host.setObjectName("serveHost")
    host.setPlaceholderText("127.0.0.1 (any other address needs a token)")
    port = QSpinBox()
    port.setObjectName("servePort")
    port.setRange(1, 65535)
    port.setValue(s.port)
    token = QLineEdit(s.token)
    token.setObjectName("serveToken")
    token.setEchoMode(QLineEdit.EchoMode.Password)
    token.setPlaceholderText("empty: $CORRAL_SERVE_TOKEN, else none (loopback only)")
    history = QCheckBox("Keep conversations made through the API in the history")
    history.setObjectName("serveHistory")
    history.setChecked(s.history)
    form.addRow("", enabled)
    form.addRow("Host", host)
    form.addRow("Port", port)
    form.addRow("Token", token)
    form.addRow("", history)

    def write() -> None:
        s.enabled = enabled.isChecked()
        s.host = host.text().strip() or "127.0.0.1"
        s.port = port.value()
        s.token = token.text().strip()
        s.history = history.isChecked()

    return box, write


def serve_status(ctx: AppContext, parent: QWidget) -> QLabel:
    """The status bar's item: the API's address, or off, or error (the tooltip says why)."""
    label = QLabel(parent)
    label.setObjectName("serveStatus")
    switch = serve_switch(ctx)

    def show(state: str, text: str) -> None:
        label.setText(("● " if state == "on" else "○ ") + text)
        label.setToolTip(switch.problem or ("Serving the OpenAI-compatible API (Settings)"
                                            if state == "on" else
                                            "The local API is off (Settings: Serve the local API)"))
        label.setStyleSheet({"on": "color: #2e7d32;", "error": "color: #c62828;"}.get(
            state, "color: #9e9e9e;"))

    switch.state_changed.connect(show)
    show(switch.state, switch.text)
    if ctx.settings.serve.enabled:  # the window serves from its start, as the setting says
        QTimer.singleShot(0, switch.apply)
    return label
