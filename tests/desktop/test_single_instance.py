"""One window per data folder: a second `corral FILE` (a real process) hands its files to the
running window, which shows them on Documents ready to index; indexing them puts them in the
chosen knowledge base; a socket left by a killed window does not block the next one. Also the
window's icon and the About box."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QDir

from core.config import data_dir
from core.rag.store import close_stores
from core.safety.code_scan.semgrep import find_semgrep_core
from desktop.app import MainWindow, app_icon
from desktop.open_files import OpenFilesDialog
from desktop.single_instance import InstanceServer, hand_over_or_serve, server_name
from tests.fixtures.documents import minilm_embedder

__all__ = ["minilm_embedder"]
LONG = 180000
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def window(qtbot, ctx):
    with qtbot.waitSignal(ctx.jobs.busy_changed, timeout=60000, check_params_cb=lambda n: n == 0):
        w = MainWindow(ctx)
        qtbot.addWidget(w)
    yield w
    w.status.shutdown()
    for page in w.pages.values():
        shutdown = getattr(page, "shutdown", None)
        if callable(shutdown):
            shutdown()
    ctx.jobs.cancel_all()
    ctx.jobs.wait_all()
    close_stores()


@pytest.fixture
def serving(window, qapp):
    """The running window's server, wired as run_gui wires it."""
    server = hand_over_or_serve(data_dir(), [], qapp)
    assert server is not None and server.server.isListening()
    server.files_received.connect(window.open_files)
    yield server
    server.close()
    server.deleteLater()


def _dialog(window: MainWindow) -> OpenFilesDialog:
    dialog = window._files_dialog
    assert isinstance(dialog, OpenFilesDialog) and dialog.isVisible()
    return dialog


def test_a_second_corral_hands_its_files_to_the_running_window(
        qtbot, window, serving, tmp_path: Path, minilm_embedder) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Llamas\n\nLlamas hum when they are curious about a visitor.\n")
    with qtbot.waitSignal(serving.files_received, timeout=60000) as got:
        second = subprocess.Popen([sys.executable, "-m", "desktop.launcher", "notes.md"], cwd=tmp_path,
                                  env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert got.args == [[str(notes)]]
    qtbot.waitUntil(lambda: second.poll() is not None, timeout=30000)
    assert second.returncode == 0, second.stderr.read() if second.stderr else ""
    # The window comes forward on Documents with the file ready to index.
    assert window.current_page == "Documents"
    dialog = _dialog(window)
    assert dialog.files == [str(notes)] and dialog.file_list.item(0).text() == "notes.md"
    assert "1 file ready to index" in dialog.heading.text()
    assert dialog.chosen == "Documents"  # no knowledge base yet: the default new one
    page = window.page("Documents")
    with qtbot.waitSignal(page.settled, timeout=LONG):
        dialog.index_button.click()
    assert page.current_kb == "Documents"
    assert page._infos["Documents"].files == 1 and page._infos["Documents"].chunks >= 1


def _index_through_dialog(qtbot, window: MainWindow, path: Path, kb: str) -> None:
    window.open_files([str(path)])
    dialog = _dialog(window)
    dialog.kb_choice.setEditText(kb)
    with qtbot.waitSignal(window.page("Documents").settled, timeout=LONG):
        dialog.index_button.click()


def test_files_go_into_the_knowledge_base_the_user_picks(
        qtbot, window, tmp_path: Path, minilm_embedder) -> None:
    texts = {"one.txt": "Alpacas graze in the high valley.", "two.txt": "Violins need rosin.",
             "three.txt": "Comets carry ice."}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    page = window.page("Documents")
    _index_through_dialog(qtbot, window, tmp_path / "one.txt", "Documents")  # new
    _index_through_dialog(qtbot, window, tmp_path / "two.txt", "Archive")  # another new one
    assert page.current_kb == "Archive"
    window.open_files([str(tmp_path / "three.txt")])
    assert sorted(_dialog(window).knowledge_bases()) == ["Archive", "Documents"]
    _dialog(window).reject()
    _index_through_dialog(qtbot, window, tmp_path / "three.txt", "Documents")  # existing, not current
    qtbot.waitUntil(lambda: page._infos["Documents"].files == 2, timeout=LONG)
    assert page._infos["Archive"].files == 1 and page.current_kb == "Documents"


def test_a_second_plain_corral_brings_the_running_window_forward(qtbot, window, serving) -> None:
    window.show_page("Tokens")
    with qtbot.waitSignal(serving.files_received, timeout=60000) as got:
        second = subprocess.Popen([sys.executable, "-m", "desktop.launcher"], cwd=ROOT,
                                  env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    qtbot.waitUntil(lambda: second.poll() is not None, timeout=30000)
    assert second.returncode == 0 and got.args == [[]]
    assert window.current_page == "Tokens" and window._files_dialog is None  # nothing to index


def test_more_files_join_the_open_dialog_without_duplicates(qtbot, window, serving, tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("alpha")
    b.write_text("beta")
    window.open_files([str(a)])
    first = _dialog(window)
    window.open_files([str(a), str(b)])
    assert _dialog(window) is first and first.files == [str(a), str(b)]
    assert "2 files ready to index" in first.heading.text()
    first.reject()


def test_a_stale_socket_from_a_killed_window_does_not_block_the_next(qtbot, qapp, tmp_path: Path) -> None:
    home = tmp_path / "other-home"
    home.mkdir()
    code = ("import sys; from pathlib import Path; from PySide6.QtCore import QCoreApplication\n"
            "from desktop.single_instance import hand_over_or_serve\n"
            "app = QCoreApplication([]); s = hand_over_or_serve(Path(sys.argv[1]), [], app)\n"
            "print('listening', flush=True); app.exec()")
    first = subprocess.Popen([sys.executable, "-c", code, str(home)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "listening"
        # alive: a newcomer hands over instead of serving
        assert hand_over_or_serve(home, [], qapp) is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    socket_file = Path(QDir.tempPath()) / server_name(home)
    assert socket_file.exists()  # what a kill -9 leaves behind
    server = hand_over_or_serve(home, [], qapp)
    assert isinstance(server, InstanceServer) and server.server.isListening()
    server.close()
    server.deleteLater()


def test_the_window_and_about_box_show_the_icon_version_and_parts(qtbot, window, monkeypatch) -> None:
    icon = app_icon()
    assert not icon.isNull() and {16, 256} <= {s.width() for s in icon.availableSizes()}
    window.about_button.click()
    from desktop.about import AboutDialog

    about = window.findChild(AboutDialog)
    assert about is not None and about.isVisible()
    assert "Corral 0.1.0" in about.title.text()
    semgrep_row = about.rows["Code scan: CodeShield's semgrep rules"].text()
    assert ("present" in semgrep_row) == (find_semgrep_core() is not None)
    assert "Standard embedder mode" in about.rows
    about.close()
    monkeypatch.setenv("CORRAL_SEMGREP_CORE", "")  # a build without semgrep says so
    missing = AboutDialog(icon, window)
    qtbot.addWidget(missing)
    assert "missing" in missing.rows["Code scan: CodeShield's semgrep rules"].text()
