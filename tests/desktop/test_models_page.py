"""The Models page driven like a user would: list, pull (progress, cancel), delete, details."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from core.models import library
from desktop.pages.models.page import ModelsPage
from tests.fixtures.ollama import FakeOllama

WAIT = 15000


def make_page(qtbot, ctx, host: str, store: Path | None = None) -> ModelsPage:
    ctx.settings.ollama.host = host
    ctx.settings.ollama.connect_timeout = 2.0
    ctx.settings.ollama.store_dir = str(store) if store else ""
    page = ModelsPage(ctx)
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.refreshed, timeout=WAIT):
        pass
    return page


def column(page: ModelsPage, col: int) -> list[str]:
    return [page.table.item(r, col).text() for r in range(page.table.rowCount())]


def finish(qtbot, ctx) -> None:
    qtbot.waitUntil(lambda: not ctx.jobs.running, timeout=WAIT)


def test_list_shows_models_from_all_three_sources(qtbot, ctx, ollama_server: FakeOllama,
                                                  ollama_store: Path, tiny_gguf: Path) -> None:
    ollama_server.add_model("llama2:7b", parameter_size="6.7B", quantization="Q4_0")
    library.import_file(tiny_gguf, "tiny-file")
    page = make_page(qtbot, ctx, ollama_server.host, ollama_store)
    page.resize(1200, 600)
    assert column(page, 0) == ["llama2:7b", "tiny:latest", "tiny-file"]
    assert column(page, 1) == ["Ollama server", "Ollama store", "GGUF file"]
    assert column(page, 3)[0] == "6.7B" and column(page, 4)[0] == "Q4_0"
    assert column(page, 6) == ["4096", "4096", "4096"]
    assert page.notice.isHidden()
    # the detail panel of the imported file: metadata, highlighted template, SHA-256, chat
    with qtbot.waitSignal(page.detail_shown, timeout=WAIT):
        page.select_ref("tiny-file")
    detail = page.detail
    assert "[INST]" in detail.template.toPlainText()
    assert detail.metadata.rowCount() > 10
    assert detail.sha.text().startswith("SHA-256: ") and len(detail.sha.text()) == 9 + 64
    assert detail.chat_button.isEnabled()
    with qtbot.waitSignal(ctx.bus.open_chat, timeout=WAIT) as chat:
        qtbot.mouseClick(detail.chat_button, Qt.MouseButton.LeftButton)
    assert chat.args == ["tiny-file"]
    # the store model shows its Ollama Modelfile parts
    with qtbot.waitSignal(page.detail_shown, timeout=WAIT):
        page.select_ref("store:tiny:latest")
    assert "# SYSTEM\nYou are tiny." in detail.modelfile.toPlainText()
    assert not page.delete_button.isEnabled()  # Corral never writes into Ollama's store
    page.grab().save("/tmp/models_page.png")
    finish(qtbot, ctx)


def test_empty_state_names_the_ollama_host(qtbot, ctx) -> None:
    server = FakeOllama().start()
    host = server.host
    server.stop()
    page = make_page(qtbot, ctx, host)
    assert page.table_stack.currentWidget() is page.empty
    text = page.empty.text()
    assert f"Ollama is not running at {host} — start it or change the host in Settings" in text
    finish(qtbot, ctx)


def test_pull_shows_progress_then_the_new_row(qtbot, ctx, ollama_server: FakeOllama) -> None:
    gate = threading.Event()
    ollama_server.script_pull(sizes=(6000, 200), pause=gate)
    page = make_page(qtbot, ctx, ollama_server.host)
    qtbot.keyClicks(page.pull_name, "tiny:1b")
    qtbot.mouseClick(page.pull_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.pull_status.text().startswith("pulling "), timeout=WAIT)
    assert not page.pull_progress.isHidden() and not page.cancel_button.isHidden()
    assert not page.pull_button.isEnabled()
    gate.set()
    with qtbot.waitSignal(page.refreshed, timeout=WAIT):
        pass
    qtbot.waitUntil(lambda: "tiny:1b" in column(page, 0), timeout=WAIT)
    assert page.pull_status.text() == "Pulled tiny:1b."
    assert page.pull_progress.isHidden() and page.pull_button.isEnabled()
    finish(qtbot, ctx)


def test_cancel_leaves_no_row(qtbot, ctx, ollama_server: FakeOllama) -> None:
    gate = threading.Event()
    ollama_server.script_pull(sizes=(6000,), pause=gate)
    page = make_page(qtbot, ctx, ollama_server.host)
    page.pull_name.setText("big:70b")
    qtbot.mouseClick(page.pull_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.pull_status.text().startswith("pulling "), timeout=WAIT)
    worker = page.pull_worker
    assert worker is not None
    with qtbot.waitSignal(worker.signals.done, timeout=WAIT):
        qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(page.refreshed, timeout=WAIT):
        pass
    assert page.pull_status.text() == "Pull of big:70b cancelled; nothing was added."
    assert "big:70b" not in column(page, 0)
    assert not ollama_server.has_model("big:70b")
    gate.set()
    finish(qtbot, ctx)


def test_failed_pull_says_why_in_a_sentence(qtbot, ctx, ollama_server: FakeOllama) -> None:
    page = make_page(qtbot, ctx, ollama_server.host)
    page.pull_name.setText("no-such-model")
    with qtbot.waitSignal(page.refreshed, timeout=WAIT):
        qtbot.mouseClick(page.pull_button, Qt.MouseButton.LeftButton)
    assert "library has no model 'no-such-model'" in page.pull_status.text()
    assert page.table.rowCount() == 0
    finish(qtbot, ctx)


@pytest.mark.parametrize("answer", [False, True])
def test_delete_asks_first(qtbot, ctx, ollama_server: FakeOllama, tiny_gguf: Path,
                           monkeypatch: pytest.MonkeyPatch, answer: bool) -> None:
    ollama_server.add_model("llama2:7b")
    library.import_file(tiny_gguf, "tiny-file")
    page = make_page(qtbot, ctx, ollama_server.host)
    asked: list[str] = []

    def confirm(title: str, text: str) -> bool:
        asked.append(text)
        return answer

    monkeypatch.setattr(page, "confirm", confirm)
    for ref in ("ollama:llama2:7b", "tiny-file"):
        with qtbot.waitSignal(page.detail_shown, timeout=WAIT):
            page.select_ref(ref)
        assert page.delete_button.isEnabled()
        if answer:
            with qtbot.waitSignal(page.refreshed, timeout=WAIT):
                qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
        else:
            qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
        assert len(asked) == (1 if ref.startswith("ollama") else 2)
    assert "Delete llama2:7b from Ollama at" in asked[0]
    assert "stays where it is" in asked[1]
    if answer:
        assert page.table.rowCount() == 0
        assert not ollama_server.has_model("llama2:7b") and tiny_gguf.exists()
    else:
        assert column(page, 0) == ["llama2:7b", "tiny-file"]
        assert not ollama_server.requests_to("/api/delete")
    finish(qtbot, ctx)


def test_import_folder_and_damaged_file(qtbot, ctx, ollama_server: FakeOllama,
                                        tmp_path: Path, tiny_gguf: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "good.gguf").write_bytes(tiny_gguf.read_bytes())
    (folder / "cut.gguf").write_bytes(tiny_gguf.read_bytes()[:100_000])
    page = make_page(qtbot, ctx, ollama_server.host)
    with qtbot.waitSignal(page.refreshed, timeout=WAIT):
        page.import_paths([str(folder)])
    assert column(page, 0) == ["tiny-random-llama"]
    status = page.pull_status.text()
    assert "Imported tiny-random-llama." in status
    assert "Not imported: cut.gguf: incomplete file," in status and "% present" in status
    finish(qtbot, ctx)
