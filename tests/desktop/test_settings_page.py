"""The Settings page: values saved atomically (and never reported saved when they were not),
and the fast embedder prepared with progress."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from core.config import Settings, settings_path
from core.errors import FeatureUnavailable
from desktop.pages.settings.page import SettingsPage


def test_save_writes_settings_and_tells_other_pages(qtbot, ctx) -> None:
    page = SettingsPage(ctx)
    qtbot.addWidget(page)
    page.ollama_host.setText("127.0.0.1:5555")
    page.n_ctx.setValue(8192)
    page.store_mode.setCurrentIndex(page.store_mode.findData("server"))
    with qtbot.waitSignal(ctx.bus.settings_changed, timeout=5000):
        page.save_button.click()
    saved = Settings.load()
    assert saved.ollama.host == "127.0.0.1:5555"
    assert saved.engine.n_ctx == 8192
    assert saved.store.mode == "server"


def test_engine_pool_limits_are_saved_and_applied(qtbot, ctx) -> None:
    from core.models.pool import engine_pool

    page = SettingsPage(ctx)
    qtbot.addWidget(page)
    page.max_models.setValue(3)
    page.keep_alive.setValue(90)
    try:
        with qtbot.waitSignal(ctx.bus.settings_changed, timeout=5000):
            page.save_button.click()
        saved = Settings.load()
        assert (saved.engine.max_models, saved.engine.keep_alive_s) == (3, 90.0)
        assert (engine_pool().max_chat, engine_pool().keep_alive_s) == (3, 90.0)  # at once
    finally:
        engine_pool().configure(max_chat=1, keep_alive_s=300.0)


def test_fast_mode_is_prepared_with_visible_progress(qtbot, ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.rag.fast_embedder as fast

    seen: list[str] = []

    def export(mode, spec, *, progress, **_kw):  # the real export is tested in tests/core
        for i in range(4):
            progress(i / 4, f"step {i}")
        seen.append(mode)

    monkeypatch.setattr(fast, "fast_embedder_ready", lambda mode, spec="minilm", **_k: False)
    monkeypatch.setattr(fast, "prepare_fast_embedder", export)
    page = SettingsPage(ctx)
    qtbot.addWidget(page)
    page.embedder_mode.setCurrentIndex(page.embedder_mode.findData("fast"))
    shown: list[int] = []
    page.export_bar.valueChanged.connect(shown.append)
    page.save_button.click()
    qtbot.waitUntil(lambda: "ready" in page.export_note.text(), timeout=10000)
    assert shown and max(shown) == 75  # the bar moved with the export's own steps
    assert page.export_bar.isHidden()
    assert seen == ["fast"]
    assert Settings.load().embedder.mode == "fast"


def test_failed_export_says_why_and_falls_back(qtbot, ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.rag.fast_embedder as fast

    def broken(*_a, **_k):
        raise FeatureUnavailable("OpenVINO is not installed")

    monkeypatch.setattr(fast, "fast_embedder_ready", lambda *a, **k: False)
    monkeypatch.setattr(fast, "prepare_fast_embedder", broken)
    page = SettingsPage(ctx)
    qtbot.addWidget(page)
    page.embedder_mode.setCurrentIndex(page.embedder_mode.findData("fastest"))
    page.save_button.click()
    qtbot.waitUntil(lambda: "OpenVINO is not installed" in page.export_note.text(), timeout=10000)
    assert "standard embedder" in page.export_note.text()


def _save_and_listen(qtbot, ctx, page: SettingsPage) -> tuple[list[str], list[str], list[None]]:
    """Press Save; return what the status bar was told: messages, errors, settings changes."""
    statuses: list[str] = []
    errors: list[str] = []
    changed: list[None] = []
    ctx.bus.status_message.connect(lambda text, _ms: statuses.append(text))
    ctx.bus.error.connect(errors.append)
    ctx.bus.settings_changed.connect(lambda: changed.append(None))
    qtbot.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
    return statuses, errors, changed


def test_an_unwritable_settings_file_is_not_reported_saved(qtbot, ctx) -> None:
    # Running as root, permissions do not stop a write: a folder where the file goes does.
    settings_path().mkdir(parents=True)
    page = SettingsPage(ctx)
    qtbot.addWidget(page)
    page.n_ctx.setValue(8192)
    statuses, errors, changed = _save_and_listen(qtbot, ctx, page)
    assert "Settings saved." not in statuses and not changed
    [error] = errors
    assert error == f"Settings not saved: Is a directory ({settings_path()})."  # what, where
    assert not page.problem.isHidden() and page.problem.text() == error
    assert settings_path().is_dir()  # nothing was written over it


def test_a_refused_write_says_why(qtbot, ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.config

    def refuse(path, _text) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(core.config, "atomic_write_text", refuse)
    page = SettingsPage(ctx)
    qtbot.addWidget(page)
    page.ollama_host.setText("127.0.0.1:5555")
    statuses, errors, changed = _save_and_listen(qtbot, ctx, page)
    assert "Settings saved." not in statuses and not changed
    assert errors == [f"Settings not saved: Permission denied ({settings_path()})."]
    assert page.problem.text() == errors[0]
    assert not settings_path().exists()

    monkeypatch.undo()  # the disk is writable again: saving works and says so
    statuses, errors, changed = _save_and_listen(qtbot, ctx, page)
    assert "Settings saved." in statuses and changed and not errors
    assert page.problem.isHidden()
    assert Settings.load().ollama.host == "127.0.0.1:5555"


def test_a_broken_settings_file_is_never_overwritten(qtbot, qapp) -> None:
    from desktop.context import AppContext

    broken = "[ollama\nhost = 'my.server:11434'\n"  # the user's file, one bracket short
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text(broken, encoding="utf-8")
    ctx = AppContext()
    assert ctx.settings_error
    page = SettingsPage(ctx)
    qtbot.addWidget(page)
    # the page says so before anyone edits anything
    assert not page.problem.isHidden()
    assert "does not overwrite that file" in page.problem.text()
    page.n_ctx.setValue(8192)
    statuses, errors, changed = _save_and_listen(qtbot, ctx, page)
    assert "Settings saved." not in statuses and not changed
    [error] = errors
    assert "could not be read" in error and "does not overwrite it" in error
    assert str(settings_path()) in error and page.problem.text() == error
    assert settings_path().read_text(encoding="utf-8") == broken


def test_fastest_is_calibrated_on_the_chosen_knowledge_base(qtbot, ctx, handbook, monkeypatch) -> None:
    """Settings calibrates 'fastest' on a knowledge base's own documents, not built-in text."""
    from core.rag import fast_embedder
    from tests.fixtures.documents import HANDBOOK_PAGE_TWO

    asked: list[object] = []
    monkeypatch.setattr(fast_embedder, "prepare_fast_embedder",
                        lambda mode, spec, calibration=None, progress=None: asked.append(
                            (mode, calibration)))
    page = SettingsPage(ctx)
    qtbot.addWidget(page)
    page.show()
    combo = page.calibration.combo

    def handbook_item() -> int:
        return next((i for i in range(combo.count()) if combo.itemData(i) == ("kb", "Handbook")), -1)

    qtbot.waitUntil(lambda: handbook_item() >= 0, timeout=30000)
    combo.setCurrentIndex(handbook_item())
    page.calibration.calibrate_button.click()
    qtbot.waitUntil(lambda: bool(asked), timeout=30000)
    mode, passages = asked[0]
    assert mode == "fastest" and HANDBOOK_PAGE_TWO in " ".join(passages)  # type: ignore[arg-type]
