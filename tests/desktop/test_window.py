"""The main window: navigation over every page, status bar, geometry, screenshots, crash hook."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt
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


# --- one page asks another: the window builds the other page first --------------------------


def click_row(qtbot, models, ref: str) -> None:
    """Click the Models table's row of ``ref`` and wait for its details."""
    item = models.table.item(models.row_of(ref), 0)
    with qtbot.waitSignal(models.detail_shown, timeout=60000):
        qtbot.mouseClick(models.table.viewport(), Qt.MouseButton.LeftButton,
                         pos=models.table.visualItemRect(item).center())


def test_chat_with_it_opens_the_model_in_a_chat_page_never_shown(qtbot, ctx, tiny_gguf,
                                                                 tmp_path, monkeypatch) -> None:
    import desktop.pages.chat.page as chat_page
    from core.models import library

    for name in ("model-a", "model-b"):
        copy = tmp_path / f"{name}.gguf"
        copy.write_bytes(tiny_gguf.read_bytes())
        library.import_file(copy, name)
    opened: list[str] = []
    real = chat_page.open_model_job

    def open_model_job(job, ref, settings):
        opened.append(ref)
        return real(job, ref, settings)

    monkeypatch.setattr(chat_page, "open_model_job", open_model_job)
    ctx.settings.ollama.host = "127.0.0.1:9"  # no Ollama: the imported files only
    window = MainWindow(ctx)
    qtbot.addWidget(window)
    window.show()
    models = window.page("Models")
    qtbot.waitUntil(lambda: models.row_of("model-a") >= 0, timeout=60000)
    assert "Chat" not in window.pages
    click_row(qtbot, models, "model-a")
    qtbot.mouseClick(models.detail.chat_button, Qt.MouseButton.LeftButton)
    assert window.current_page == "Chat"
    chat = window.page("Chat")
    qtbot.waitUntil(lambda: chat.backend is not None, timeout=60000)
    assert (chat.backend_ref, chat.model_box.currentText()) == ("model-a", "model-a")
    assert chat.format_note.text().startswith("model-a (imported GGUF): Auto picks llama2")
    # again from the Models page, now that the Chat page exists: opened once, not twice
    window.show_page("Models")
    click_row(qtbot, models, "model-b")
    qtbot.mouseClick(models.detail.chat_button, Qt.MouseButton.LeftButton)
    assert window.current_page == "Chat"
    qtbot.waitUntil(lambda: chat.backend is not None, timeout=60000)
    assert chat.backend_ref == "model-b" and opened == ["model-a", "model-b"]
    ctx.jobs.wait_all()
    window.status.shutdown()


def test_open_in_tokens_reaches_a_tokens_page_never_shown(qtbot, ctx, tiny_gguf,
                                                         monkeypatch) -> None:
    from desktop.pages.tokens.page import TokensPage

    received: list[tuple[str, str]] = []
    real = TokensPage.receive_text

    def receive_text(self, text: str, ref: str = "") -> None:
        received.append((text, ref))
        real(self, text, ref)

    monkeypatch.setattr(TokensPage, "receive_text", receive_text)
    ctx.settings.ollama.host = "127.0.0.1:9"
    window = MainWindow(ctx)
    qtbot.addWidget(window)
    window.show()
    window.show_page("Chat")
    chat = window.page("Chat")
    qtbot.keyClicks(chat.model_box, str(tiny_gguf))
    qtbot.keyClick(chat.model_box, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: chat.backend is not None, timeout=60000)
    qtbot.mouseClick(chat.inspect_button, Qt.MouseButton.LeftButton)
    chat.input.setPlainText("hello tokens")
    qtbot.waitUntil(lambda: "hello tokens" in chat.inspector.text, timeout=60000)
    assert "Tokens" not in window.pages
    qtbot.mouseClick(chat.inspector.to_tokens, Qt.MouseButton.LeftButton)
    assert window.current_page == "Tokens"
    tokens = window.page("Tokens")
    assert isinstance(tokens, TokensPage)
    assert tokens.text.toPlainText() == chat.inspector.text
    assert received == [(chat.inspector.text, str(tiny_gguf))]
    # again, now that the Tokens page exists: received once, not twice
    window.show_page("Chat")
    qtbot.mouseClick(chat.inspector.to_tokens, Qt.MouseButton.LeftButton)
    assert window.current_page == "Tokens" and len(received) == 2
    qtbot.waitUntil(lambda: not ctx.jobs.running, timeout=60000)
    window.status.shutdown()
