"""The Documents page driven as a user would: drop a folder of file URLs, watch it index,
see per-file statuses with reasons, cancel and resume."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent

from core.rag.store import close_stores
from desktop.pages.documents import DocumentsPage
from tests.fixtures.documents import make_pdf, write_corpus

pytestmark = pytest.mark.slow


@pytest.fixture
def page(qtbot, ctx):
    with qtbot.waitSignal(ctx.jobs.busy_changed, timeout=60000, check_params_cb=lambda n: n == 0):
        p = DocumentsPage(ctx)
        qtbot.addWidget(p)
    yield p
    ctx.jobs.cancel_all()
    ctx.jobs.wait_all()
    close_stores()


def drop(widget, paths: list[Path]) -> None:
    """What the window system delivers for a drop: drag-enter (accepted), then drop."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    widget.dragEnterEvent(enter)
    assert enter.isAccepted()
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(event)
    assert event.isAccepted()


def test_dropping_a_folder_indexes_it_with_per_file_status(qtbot, page, tmp_path: Path) -> None:
    assert page.empty.isVisible() or not page.isVisible()
    assert page.kb_list.count() == 0
    docs = tmp_path / "folder"
    write_corpus(docs, n_files=2, words=60)
    make_pdf(docs / "scan.pdf", ["", ""], scanned=True)
    (docs / "blob.txt").write_bytes(os.urandom(3000))
    with qtbot.waitSignal(page.indexing_finished, timeout=180000) as finished:
        drop(page, [docs])
    summary = finished.args[0]
    assert summary["indexed"] == 2 and summary["skipped"] == 2 and not summary["cancelled"]
    rows = {Path(page.files.topLevelItem(i).text(0)).name:
            (page.files.topLevelItem(i).text(1), page.files.topLevelItem(i).text(3))
            for i in range(page.files.topLevelItemCount())}
    assert rows["scan.pdf"] == ("Skipped", "scanned PDF: no text layer")
    assert rows["blob.txt"] == ("Skipped", "not a text file")
    assert rows["note-000.txt"][0] == "Indexed"
    assert "Done: 2 indexed" in page.progress_text.text()
    with qtbot.waitSignal(page.knowledge_bases_loaded, timeout=60000):
        pass
    assert page.kb_list.count() == 1 and page.current_kb == "Documents"
    assert "chunks from 2 files" in page.info.text()
    page.resize(900, 600)
    page.grab().save(str(tmp_path / "documents.png"))

    with qtbot.waitSignal(page.indexing_finished, timeout=180000) as again:
        drop(page, [docs])  # dropping the same folder again: nothing to redo
    assert again.args[0]["unchanged"] == 2 and again.args[0]["indexed"] == 0
    with qtbot.waitSignal(page.knowledge_bases_loaded, timeout=60000):
        pass


def test_cancel_keeps_finished_files_and_a_new_drop_resumes(qtbot, page, tmp_path: Path) -> None:
    docs = tmp_path / "many"
    write_corpus(docs, n_files=12, words=400)
    (docs / "0-junk.bin").write_bytes(os.urandom(2000))  # read first: its event comes early

    def on_event(ev) -> None:
        if ev.kind == "file" and page.cancel_button.isEnabled():
            qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)

    page.files.clear()
    with qtbot.waitSignal(page.indexing_finished, timeout=180000) as first:
        drop(page, [docs])
        page._index_worker.signals.partial.connect(on_event)
    assert first.args[0]["cancelled"] and first.args[0]["indexed"] < 12
    assert "Cancelled" in page.progress_text.text()
    done_first = first.args[0]["indexed"]
    with qtbot.waitSignal(page.knowledge_bases_loaded, timeout=60000):
        pass
    with qtbot.waitSignal(page.indexing_finished, timeout=180000) as second:
        drop(page, [docs])
    assert second.args[0]["unchanged"] == done_first
    assert second.args[0]["indexed"] == 12 - done_first
    with qtbot.waitSignal(page.knowledge_bases_loaded, timeout=60000):
        pass
