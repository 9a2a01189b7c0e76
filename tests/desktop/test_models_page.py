"""The Models page driven like a user would: list, pull (progress, cancel), delete, details."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QLabel

from core.models import library
from desktop.pages.models import jobs
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


def summary(page: ModelsPage) -> dict[str, str]:
    """The detail panel's Summary tab, label -> value."""
    form = page.detail.form
    out = {}
    for row in range(form.rowCount()):
        label = form.itemAt(row, QFormLayout.ItemRole.LabelRole).widget()
        value = form.itemAt(row, QFormLayout.ItemRole.FieldRole).widget()
        assert isinstance(label, QLabel) and isinstance(value, QLabel)
        out[label.text()] = value.text()
    return out


def two_files(tmp_path: Path, tiny_gguf: Path) -> tuple[Path, Path]:
    """The tiny GGUF imported twice, as model-a and model-b."""
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    for path in (a, b):
        path.write_bytes(tiny_gguf.read_bytes())
        library.import_file(path, f"model-{path.stem}")
    return a.resolve(), b.resolve()


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
    qtbot.keyClicks(page.pull.name, "tiny:1b")
    qtbot.mouseClick(page.pull.button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.pull_status.text().startswith("pulling "), timeout=WAIT)
    assert not page.pull.progress.isHidden() and not page.pull.cancel_button.isHidden()
    assert not page.pull.button.isEnabled()
    gate.set()
    with qtbot.waitSignal(page.refreshed, timeout=WAIT):
        pass
    qtbot.waitUntil(lambda: "tiny:1b" in column(page, 0), timeout=WAIT)
    assert page.pull_status.text() == "Pulled tiny:1b."
    assert page.pull.progress.isHidden() and page.pull.button.isEnabled()
    finish(qtbot, ctx)


def test_cancel_leaves_no_row(qtbot, ctx, ollama_server: FakeOllama) -> None:
    gate = threading.Event()
    ollama_server.script_pull(sizes=(6000,), pause=gate)
    page = make_page(qtbot, ctx, ollama_server.host)
    page.pull.name.setText("big:70b")
    qtbot.mouseClick(page.pull.button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.pull_status.text().startswith("pulling "), timeout=WAIT)
    worker = page.pull.worker
    assert worker is not None
    with qtbot.waitSignal(worker.signals.done, timeout=WAIT):
        qtbot.mouseClick(page.pull.cancel_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(page.refreshed, timeout=WAIT):
        pass
    assert page.pull_status.text() == "Pull of big:70b cancelled; nothing was added."
    assert "big:70b" not in column(page, 0)
    assert not ollama_server.has_model("big:70b")
    gate.set()
    finish(qtbot, ctx)


def test_failed_pull_says_why_in_a_sentence(qtbot, ctx, ollama_server: FakeOllama) -> None:
    page = make_page(qtbot, ctx, ollama_server.host)
    page.pull.name.setText("no-such-model")
    with qtbot.waitSignal(page.refreshed, timeout=WAIT):
        qtbot.mouseClick(page.pull.button, Qt.MouseButton.LeftButton)
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


def test_a_slow_detail_never_paints_over_the_next_model(qtbot, ctx, ollama_server: FakeOllama,
                                                        tmp_path: Path, tiny_gguf: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _, b = two_files(tmp_path, tiny_gguf)
    page = make_page(qtbot, ctx, ollama_server.host)
    gate, a_ended = threading.Event(), threading.Event()
    a_cancelled: list[bool] = []
    real = jobs.inspect_job

    def inspect(job, ref, settings):  # model-a's file is slow to read
        if ref != "model-a":
            return real(job, ref, settings)
        try:
            assert gate.wait(WAIT / 1000)
            a_cancelled.append(job.cancelled)
            return real(job, ref, settings)
        finally:
            a_ended.set()

    monkeypatch.setattr(jobs, "inspect_job", inspect)
    shown: list[str] = []
    page.detail_shown.connect(shown.append)
    page.select_ref("model-a")
    assert page.detail.title.text() == "model-a — reading…"
    with qtbot.waitSignal(page.detail_shown, timeout=WAIT):
        page.select_ref("model-b")
    assert page.detail.title.text() == "model-b — GGUF file"
    gate.set()  # model-a's answer arrives now, after model-b's
    qtbot.waitUntil(a_ended.is_set, timeout=WAIT)
    finish(qtbot, ctx)
    assert a_cancelled == [True]  # clicking model-b cancelled model-a's reading
    assert shown == ["model-b"]
    assert page.detail.title.text() == "model-b — GGUF file"
    assert summary(page)["File"] == str(b)
    assert page.detail.chat_button.isEnabled()


def test_a_hash_lands_only_on_its_own_model(qtbot, ctx, ollama_server: FakeOllama,
                                            tmp_path: Path, tiny_gguf: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _, b = two_files(tmp_path, tiny_gguf)
    # models imported by an older Corral, whose list kept no SHA-256
    doc = json.loads(library.library_path().read_text(encoding="utf-8"))
    for item in doc["models"]:
        item.pop("sha256")
    library.library_path().write_text(json.dumps(doc), encoding="utf-8")
    page = make_page(qtbot, ctx, ollama_server.host)
    gate = threading.Event()
    real = jobs.sha256_job

    def slow_sha(job, path):
        job.progress(0.5, "computing SHA-256")
        assert gate.wait(WAIT / 1000)
        return "f" * 64

    monkeypatch.setattr(jobs, "sha256_job", slow_sha)
    with qtbot.waitSignal(page.detail_shown, timeout=WAIT):
        page.select_ref("model-a")
    sha_button = page.detail.sha_button
    assert not sha_button.isHidden() and sha_button.isEnabled()
    qtbot.mouseClick(sha_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.detail.sha.text() == "SHA-256: computing… 50%", timeout=WAIT)
    assert not sha_button.isEnabled()
    with qtbot.waitSignal(page.detail_shown, timeout=WAIT):
        page.select_ref("model-b")
    gate.set()  # model-a's hash arrives while model-b is shown
    finish(qtbot, ctx)
    assert page.detail.sha.text() == "SHA-256: –"
    assert not sha_button.isHidden() and sha_button.isEnabled()
    # model-b's own hash, computed for real
    monkeypatch.setattr(jobs, "sha256_job", real)
    qtbot.mouseClick(sha_button, Qt.MouseButton.LeftButton)
    expected = hashlib.sha256(b.read_bytes()).hexdigest()
    qtbot.waitUntil(lambda: page.detail.sha.text() == f"SHA-256: {expected}", timeout=WAIT)
    assert sha_button.isHidden()
    finish(qtbot, ctx)


# --- what is loaded in memory -----------------------------------------------------------------


def loaded_rows(page: ModelsPage) -> list[list[str]]:
    table = page.loaded.table
    return [[table.item(r, c).text() for c in range(table.columnCount() - 1)]
            for r in range(table.rowCount())]


def test_a_loaded_model_is_listed_and_unload_frees_it(qtbot, ctx, tiny_gguf: Path) -> None:
    from core.models.pool import engine_pool

    path = str(tiny_gguf.resolve())
    engine_pool().engine(tiny_gguf, n_ctx=512, n_threads=1).load()  # as a chat would
    page = make_page(qtbot, ctx, "127.0.0.1:9")
    page.resize(1100, 700)
    page.show()  # on screen, the list refreshes itself
    qtbot.waitUntil(lambda: page.loaded.unload_button(path) is not None, timeout=WAIT)
    row = next(r for r in loaded_rows(page) if r[0] == tiny_gguf.name and r[1] == "chat")
    assert row[2] == "512" and row[3].startswith("idle") and row[4].isdigit()
    page.grab().save("/tmp/models_loaded.png")
    button = page.loaded.unload_button(path)
    assert button is not None and button.isEnabled()
    with qtbot.waitSignal(page.loaded.unloaded, timeout=WAIT):
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.loaded.unload_button(path) is None, timeout=WAIT)
    assert path not in {m.path for m in engine_pool().loaded() if m.role == "chat"}
    assert page.loaded.note.text() == ""
    finish(qtbot, ctx)


class BusyPool:
    """A pool whose one chat model is busy (or turns busy when asked to unload)."""

    def __init__(self, busy: bool) -> None:
        from core.models.pool import LoadedModel

        self.model = LoadedModel("/models/big.gguf", "chat", 8192, busy, 0.0, 4242)

    def loaded(self):
        return [self.model]

    def unload(self, path, role="chat"):
        from core.errors import CorralError

        raise CorralError("big.gguf is generating an answer",
                          hint="Stop it (or wait until it ends), then unload it")


@pytest.mark.parametrize("busy", [True, False])
def test_a_busy_model_is_not_unloaded(qtbot, ctx, monkeypatch: pytest.MonkeyPatch,
                                      busy: bool) -> None:
    import core.models.pool as pool

    fake = BusyPool(busy)
    monkeypatch.setattr(pool, "engine_pool", lambda: fake)
    page = make_page(qtbot, ctx, "127.0.0.1:9")
    with qtbot.waitSignal(page.loaded.refreshed, timeout=WAIT):
        page.loaded.refresh()
    assert loaded_rows(page) == [["big.gguf", "chat", "8,192", "busy" if busy else "idle 0 s",
                                  "4242"]]
    button = page.loaded.unload_button("/models/big.gguf")
    assert button is not None
    if busy:  # nothing to click: the row says why
        assert not button.isEnabled() and "generating" in button.toolTip()
    else:  # it turned busy after the list was shown: the pool refuses, the page says why
        with qtbot.waitSignal(page.loaded.refreshed, timeout=WAIT):
            qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        assert page.loaded.note.text() == ("big.gguf is generating an answer. Stop it (or wait "
                                           "until it ends), then unload it")
        assert loaded_rows(page)[0][0] == "big.gguf"  # still there
    finish(qtbot, ctx)
