"""The main window: navigation over every page, status bar, geometry, screenshots, crash hook."""

from __future__ import annotations

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


def test_a_broken_settings_file_gives_defaults_everywhere_and_one_message(qtbot, corral_home) -> None:
    from core.config import settings_path
    from desktop.context import AppContext

    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[ollama\nhost = 'this is not toml", encoding="utf-8")
    ctx = AppContext()
    assert ctx.settings == Settings()
    errors: list[str] = []
    ctx.bus.error.connect(errors.append)
    window = MainWindow(ctx)
    qtbot.addWidget(window)
    for title, *_ in PAGES:
        window.show_page(title)
        assert not isinstance(window.page(title), PlaceholderPage), title
    qtbot.waitUntil(lambda: bool(errors) and not ctx.jobs.running, timeout=60000)
    assert len(errors) == 1, errors
    assert "settings" in errors[0].lower() and str(path) in errors[0]
    window.status.shutdown()
    ctx.jobs.cancel_all()
    ctx.jobs.wait_all()
    assert path.read_text(encoding="utf-8").startswith("[ollama\n")  # never overwritten
