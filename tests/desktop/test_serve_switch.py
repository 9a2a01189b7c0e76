"""The window's "Serve the local API" switch (Settings) and its status-bar item: switched on and
saved, the API answers at the address the status bar shows; switched off, it is gone; an
address that needs a token it does not have shows an error that says so."""

from __future__ import annotations

import socket

import httpx
from PySide6.QtWidgets import QCheckBox, QLineEdit, QMainWindow, QSpinBox

from core.config import Settings
from desktop.pages.settings.page import SettingsPage
from desktop.serve import serve_switch
from desktop.status import StatusBar


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _refused(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
    except httpx.TransportError:
        return True
    return False


def _window(qtbot, ctx) -> tuple[QMainWindow, StatusBar, SettingsPage]:
    window = QMainWindow()
    qtbot.addWidget(window)
    bar = StatusBar(ctx, window)
    window.setStatusBar(bar)
    page = SettingsPage(ctx)
    qtbot.addWidget(page)
    return window, bar, page


def _close(qtbot, ctx, bar: StatusBar) -> None:
    serve_switch(ctx).shutdown()
    qtbot.waitUntil(lambda: not ctx.jobs.running, timeout=10000)  # the probes' news painted
    bar.shutdown()


def test_the_switch_serves_and_the_status_bar_shows_where(qtbot, ctx) -> None:
    _win, bar, page = _window(qtbot, ctx)
    port = _free_port()
    try:
        assert bar.api.text() == "○ API: off"
        page.findChild(QCheckBox, "serveEnabled").setChecked(True)
        page.findChild(QSpinBox, "servePort").setValue(port)
        page.save_button.click()
        qtbot.waitUntil(lambda: bar.api.text() == f"● API: http://127.0.0.1:{port}",
                        timeout=30000)
        assert Settings.load().serve.enabled and Settings.load().serve.port == port
        resp = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30)
        assert resp.status_code == 200 and resp.json()["object"] == "list"

        page.findChild(QCheckBox, "serveEnabled").setChecked(False)
        page.save_button.click()
        qtbot.waitUntil(lambda: bar.api.text() == "○ API: off", timeout=5000)
        qtbot.waitUntil(lambda: _refused(port), timeout=15000)
    finally:
        _close(qtbot, ctx, bar)


def test_an_open_address_without_a_token_shows_an_error(qtbot, ctx, monkeypatch) -> None:
    monkeypatch.delenv("CORRAL_SERVE_TOKEN", raising=False)
    _win, bar, page = _window(qtbot, ctx)
    try:
        page.findChild(QCheckBox, "serveEnabled").setChecked(True)
        page.findChild(QLineEdit, "serveHost").setText("0.0.0.0")
        with qtbot.waitSignal(ctx.bus.error, timeout=20000) as said:
            page.save_button.click()
        assert "requires a token" in said.args[0]
        assert bar.api.text() == "○ API: error"
        assert "requires a token" in bar.api.toolTip()
    finally:
        _close(qtbot, ctx, bar)


def test_the_window_serves_from_its_start_when_the_setting_is_on(qtbot, ctx) -> None:
    port = _free_port()
    ctx.settings.serve.enabled = True
    ctx.settings.serve.port = port
    window = QMainWindow()
    qtbot.addWidget(window)
    bar = StatusBar(ctx, window)
    try:
        qtbot.waitUntil(lambda: bar.api.text() == f"● API: http://127.0.0.1:{port}",
                        timeout=30000)
        assert not _refused(port)
    finally:
        _close(qtbot, ctx, bar)
    assert _refused(port)
