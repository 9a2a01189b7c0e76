"""The main window: navigation over every page, status bar, geometry, screenshots, crash hook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PySide6.QtGui import QImage

from core.config import Settings
from desktop.app import PAGES, MainWindow, PlaceholderPage, save_screenshots


def test_window_has_every_page_and_navigates(qtbot, ctx) -> None:
    window = MainWindow(ctx)
    qtbot.addWidget(window)
    assert [window.nav.item(i).text() for i in range(window.nav.count())] == [p[0] for p in PAGES]
    for title, *_ in PAGES:
        window.show_page(title)
        assert window.current_page == title
        assert window.stack.currentWidget() is window.page(title)
    assert window.page("Settings").__class__.__name__ == "SettingsPage"
    assert set(window.pages) == {p[0] for p in PAGES}


def test_only_the_first_page_is_built_at_start(qtbot, ctx) -> None:
    window = MainWindow(ctx)
    qtbot.addWidget(window)
    assert list(window.pages) == ["Models"]
    window.show_page("Tokens")
    assert set(window.pages) == {"Models", "Tokens"}
    window.status.shutdown()


def test_jobs_started_while_building_wait_for_the_first_paint(qtbot, ctx) -> None:
    from desktop.jobs import Worker

    ran: list[str] = []
    ctx.jobs.hold()
    kept = ctx.jobs.start(Worker(lambda job: ran.append("kept")))
    dropped = ctx.jobs.start(Worker(lambda job: ran.append("dropped")))
    dropped.cancel()
    failures: list[object] = []
    dropped.signals.failed.connect(failures.append)
    assert ran == [] and len(ctx.jobs.running) == 2
    ctx.jobs.release()
    qtbot.waitUntil(lambda: kept.is_done and not ctx.jobs.running, timeout=5000)
    assert ran == ["kept"] and dropped.is_done and len(failures) == 1


def test_status_bar_says_when_ollama_is_not_running(qtbot, ctx) -> None:
    ctx.settings.ollama.host = "127.0.0.1:9"  # nothing listens on the discard port
    window = MainWindow(ctx)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: "not running" in window.status.ollama.text(), timeout=10000)
    assert "127.0.0.1:9" in window.status.ollama.text()
    window.status.shutdown()


def test_geometry_and_page_are_remembered(qtbot, ctx, corral_home: Path) -> None:
    window = MainWindow(ctx)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    window.resize(1000, 700)
    window.show_page("Tokens")
    window.status.shutdown()
    window.close()
    saved = Settings.load()
    assert saved.ui.last_page == "Tokens" and saved.ui.geometry
    from desktop.context import AppContext

    again = MainWindow(AppContext())
    qtbot.addWidget(again)
    again.show()
    qtbot.waitExposed(again)
    assert again.current_page == "Tokens"
    # The offscreen screen is narrow, so Qt clamps the width; the height comes back as saved.
    assert again.size().height() == 700
    again.status.shutdown()


def test_screenshots_show_each_page(qtbot, ctx, tmp_path: Path) -> None:
    window = MainWindow(ctx)
    qtbot.addWidget(window)
    window.resize(1100, 700)
    window.show()
    paths = save_screenshots(window, tmp_path)
    assert [p.name for p in paths] == [f"{t.lower()}.png" for t, *_ in PAGES]
    for path in paths:
        image = QImage(str(path))
        assert image.width() >= 1000 and image.height() >= 600
    window.status.shutdown()


def test_placeholder_says_why(qtbot) -> None:
    page = PlaceholderPage("Demo", "A demo page.", "This page is not part of this build yet.")
    qtbot.addWidget(page)
    from PySide6.QtWidgets import QLabel

    note = page.findChild(QLabel, "emptyState")
    assert note is not None and "not part of this build" in note.text()


def test_screenshots_command_writes_pngs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "desktop.launcher", "--screenshots", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"{t.lower()}.png" for t, *_ in PAGES)


def test_crash_hook_shows_a_sentence_and_keeps_running(qtbot, ctx, monkeypatch) -> None:
    from PySide6.QtWidgets import QApplication, QMessageBox

    from desktop.app import install_crash_hook

    window = MainWindow(ctx)
    qtbot.addWidget(window)
    old = sys.excepthook
    try:
        install_crash_hook(window)
        try:
            raise ValueError("boom")
        except ValueError:
            sys.excepthook(*sys.exc_info())
        boxes = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
        assert boxes and "boom" in boxes[-1].text()
        boxes[-1].close()
    finally:
        sys.excepthook = old
    assert window.isEnabled()
    window.status.shutdown()
