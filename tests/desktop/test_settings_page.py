"""The Settings page: values saved atomically, and the fast embedder prepared with progress."""

from __future__ import annotations

import pytest

from core.config import Settings
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
