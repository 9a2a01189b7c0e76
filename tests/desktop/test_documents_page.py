"""The Documents page driven as a user would: drop folders of file URLs, watch them index,
read each knowledge base's files from its catalogue, remove a file, preview retrieval (a
superseded, moved-away-from or cancelled search never paints its hits),
create knowledge bases with an embedder and speed mode, re-index with another embedder,
rebuild after a failed health check, queue drops while indexing, cancel and resume.

Real Chroma and the real MiniLM embedder throughout. Only the fast modes' one-time OpenVINO
export is replaced (as in test_settings_page.py): the real export and its vectors are tested
in tests/core/test_fast_embedder.py; here the real MiniLM stands in for the exported model.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QMessageBox

from core.errors import FeatureUnavailable
from core.rag.store import close_stores
from desktop.pages.documents.page import DocumentsPage
from desktop.pages.documents.widgets import KnowledgeBaseDialog
from tests.fixtures.documents import (
    WEIGHT_QUERY,
    WORDS,
    make_pdf,
    minilm_embedder,
    prose,
    write_corpus,
    write_weight_corpus,
)

__all__ = ["minilm_embedder"]
pytestmark = pytest.mark.slow
LONG = 180000


@pytest.fixture
def page(qtbot, ctx, minilm_embedder):
    with qtbot.waitSignal(ctx.jobs.busy_changed, timeout=60000, check_params_cb=lambda n: n == 0):
        p = DocumentsPage(ctx)
        qtbot.addWidget(p)
    p.resize(1000, 680)
    yield p
    p.shutdown()
    ctx.jobs.cancel_all()
    ctx.jobs.wait_all()
    close_stores()


class StandInFast:
    """The real MiniLM under a fast mode's name, where the exported model would be."""

    def __init__(self, inner: Any, mode: str) -> None:
        self.inner = inner
        self.mode = mode

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def fake_export(monkeypatch: pytest.MonkeyPatch, minilm_embedder) -> dict[str, Any]:
    """The one-time export, replaced: it reports four steps, can be held at step 1
    (``gate``) or fail (``fail``), and records its calibration passages."""
    import core.rag.embedder as embedder_module
    import core.rag.fast_embedder as fast

    state: dict[str, Any] = {"ready": set(), "calls": [], "fail": None, "gate": None}

    def ready(mode: str, spec: str = "minilm", **_kw: Any) -> bool:
        return mode == "standard" or mode in state["ready"]

    def export(mode: str, spec: str = "minilm", *, calibration=None, progress=None, **_kw):
        state["calls"].append((mode, calibration))
        if state["fail"] is not None:
            raise state["fail"]
        for i in range(4):
            progress(i / 4, f"step {i}")
            if i == 1 and state["gate"] is not None:
                state["gate"].wait(60)
        state["ready"].add(mode)

    def make(folder, mode, *, name, spec, notice=None, **_kw):
        return StandInFast(minilm_embedder, mode)

    monkeypatch.setattr(fast, "fast_embedder_ready", ready)
    monkeypatch.setattr(fast, "prepare_fast_embedder", export)
    monkeypatch.setattr(fast, "make_fast_embedder", make)
    # fast embedders made here must not outlive the test in the process-wide cache
    monkeypatch.setattr(embedder_module, "_shared", dict(embedder_module._shared))
    return state


def drop(widget, paths: list[Path]) -> None:
    """What the window system delivers for a drop: drag-enter (accepted), then drop."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    widget.dragEnterEvent(enter)
    assert enter.isAccepted()
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(event)
    assert event.isAccepted()


def index(qtbot, page, paths: list[Path]) -> None:
    """Drop ``paths`` and wait until the page shows the finished result."""
    with qtbot.waitSignal(page.settled, timeout=LONG):
        drop(page, paths)


def mixed_folder(root: Path) -> Path:
    docs = root / "folder"
    write_corpus(docs, n_files=2, words=60)
    make_pdf(docs / "scan.pdf", ["", ""], scanned=True)
    (docs / "blob.txt").write_bytes(os.urandom(3000))
    return docs


def chunks_of(page) -> int:
    return int(page._infos[page.current_kb].chunks)


def test_empty_page_has_a_title_and_says_what_to_do(qtbot, page, tmp_path: Path) -> None:
    title = page.findChild(QLabel, "pageTitle")
    assert title is not None and title.text() == "Documents"
    assert page.kb_list.count() == 0
    assert not page.empty.isHidden() and "Drop files or folders" in page.empty.text()
    assert page.tabs.isHidden() and page.kb_actions.isHidden()  # nothing to list or act on yet
    assert page.progress_row.isHidden() and page.health_row.isHidden()
    assert not page.remove_button.isEnabled() and not page.search.button.isEnabled()
    page.grab().save(str(tmp_path / "documents-empty.png"))


def test_dropping_a_folder_indexes_it_with_per_file_status(qtbot, page, tmp_path: Path) -> None:
    docs = mixed_folder(tmp_path)
    events: list[Any] = []
    page.runner.index_event.connect(events.append)
    runs: list[dict[str, Any]] = []
    page.indexing_finished.connect(runs.append)
    with qtbot.waitSignal(page.settled, timeout=LONG):
        drop(page, [docs])
        assert page.busy and not page.progress_row.isHidden() and page.cancel_button.isEnabled()
    [summary] = runs
    assert summary["indexed"] == 2 and summary["skipped"] == 2 and not summary["cancelled"]
    # while it ran, each file's row appeared with its status and reason
    assert {Path(e.path).name for e in events if e.kind == "file"} == {
        "note-000.txt", "note-001.txt", "scan.pdf", "blob.txt"}
    assert "Done: 2 indexed" in page.progress_text.text()
    assert page.kb_list.count() == 1 and page.current_kb == "Documents"
    assert page.empty.isHidden() and page.progress_row.isHidden()
    assert "chunks from 2 files (2 skipped)" in page.info.text()
    assert "all-MiniLM-L6-v2" in page.info.text() and "<b>standard</b> mode" in page.info.text()
    assert page.files.row("scan.pdf")["Status"] == "Skipped"
    assert page.files.row("scan.pdf")["Reason"] == "scanned PDF: no text layer"
    assert page.files.row("blob.txt")["Reason"] == "not a text file"
    page.grab().save(str(tmp_path / "documents.png"))

    index(qtbot, page, [docs])  # dropping the same folder again: nothing to redo
    assert runs[1]["unchanged"] == 2 and runs[1]["indexed"] == 0


def test_a_selected_knowledge_base_lists_its_files_from_the_catalogue(
        qtbot, page, ctx, tmp_path: Path) -> None:
    index(qtbot, page, [mixed_folder(tmp_path)])
    with qtbot.waitSignal(page.settled, timeout=LONG):
        page.create_kb("Second")
    assert page.current_kb == "Second" and page.files.topLevelItemCount() == 0

    # a fresh page (the app started again): no indexing run, the catalogue speaks
    fresh = DocumentsPage(ctx)
    qtbot.addWidget(fresh)
    with qtbot.waitSignal(fresh.settled, timeout=LONG):
        pass
    assert fresh.current_kb == "Documents"
    with qtbot.waitSignal(fresh.settled, timeout=LONG):
        fresh.kb_list.setCurrentRow(1)
    assert fresh.current_kb == "Second" and fresh.files.topLevelItemCount() == 0
    with qtbot.waitSignal(fresh.settled, timeout=LONG):
        fresh.kb_list.setCurrentRow(0)
    note = fresh.files.row("note-000.txt")
    assert note["File"] == "folder/note-000.txt"
    assert note["Status"] == "Indexed" and int(note["Chunks"]) >= 1
    assert re.fullmatch(r"\d\d:\d\d", note["When"])
    scan = fresh.files.row("scan.pdf")
    assert (scan["Status"], scan["Chunks"], scan["Reason"]) == (
        "Skipped", "", "scanned PDF: no text layer")
    fresh.shutdown()


def test_removing_a_file_drops_its_chunks_and_keeps_it_out(qtbot, page, tmp_path: Path) -> None:
    docs = tmp_path / "notes"
    write_corpus(docs, n_files=3, words=80)
    index(qtbot, page, [docs])
    before = chunks_of(page)
    assert not page.remove_file_button.isEnabled()  # nothing selected yet
    item = page.files.findItems("notes/note-001.txt", Qt.MatchFlag.MatchExactly, 0)[0]
    gone = int(item.text(2))
    item.setSelected(True)
    assert page.remove_file_button.isEnabled()
    with qtbot.waitSignal(page.settled, timeout=LONG):
        qtbot.mouseClick(page.remove_file_button, Qt.MouseButton.LeftButton)
    assert page.files.row("note-001.txt") is None
    assert chunks_of(page) == before - gone
    assert "Removed note-001.txt" in page.progress_text.text()

    with qtbot.waitSignal(page.settled, timeout=LONG):  # re-indexing the folder keeps it out
        qtbot.mouseClick(page.reindex_button, Qt.MouseButton.LeftButton)
    assert page.files.row("note-001.txt") is None and chunks_of(page) == before - gone
    index(qtbot, page, [docs / "note-001.txt"])  # dropped by itself: it comes back
    assert page.files.row("note-001.txt")["Status"] == "Indexed"
    assert chunks_of(page) == before


def test_search_previews_retrieval_with_source_page_and_score(qtbot, page, tmp_path: Path) -> None:
    docs = tmp_path / "manuals"
    write_corpus(docs, n_files=2, words=80)
    make_pdf(docs / "guide.pdf", [prose(7, 60),
                                  "Violin lessons are held in the copper library every winter."])
    index(qtbot, page, [docs])
    page.search.query.setText("violin lessons in the copper library")
    with qtbot.waitSignal(page.search_finished, timeout=LONG) as found:
        qtbot.mouseClick(page.search.button, Qt.MouseButton.LeftButton)
    assert found.args[0] and page.tabs.currentWidget() is page.search
    top = page.search.hits.topLevelItem(0)
    assert (top.text(1), top.text(2)) == ("guide.pdf", "2")
    assert 0.0 < float(top.text(3)) <= 1.0
    assert "Violin lessons" in top.text(4)
    assert "guide.pdf, page 2" in page.search.preview.toPlainText()
    assert page.search.hits.topLevelItemCount() <= page.search.top_k.value()
    page.grab().save(str(tmp_path / "documents-search.png"))


def test_the_keyword_weight_is_kept_with_the_knowledge_base_and_reranks_the_search(
        qtbot, page, tmp_path: Path) -> None:
    """The nearest passage in meaning and the best keyword match differ here: the weight the
    user sets decides which comes first, and it is stored where chat reads it."""
    from core.rag.knowledge_base import open_kb

    docs = write_weight_corpus(tmp_path / "d")
    index(qtbot, page, [docs])
    name = page.current_kb
    assert page.search.weight.value() == 0.5 and "keyword weight 0.5" in page.info.text()
    page.search.query.setText(WEIGHT_QUERY)

    def first_hit_with(weight: float) -> str:
        with qtbot.waitSignal(page.weight_saved, timeout=LONG), \
                qtbot.waitSignal(page.search_finished, timeout=LONG):
            page.search.weight.setValue(weight)  # as the arrows or typing set it
        return page.search.hits.topLevelItem(0).text(1)

    assert first_hit_with(0.0) == "animals.txt"  # meaning only
    assert first_hit_with(1.0) == "kitchen.txt"  # keywords only
    assert "keyword weight 1<" in page.info.text()
    with qtbot.waitSignal(page.weight_saved, timeout=LONG,
                          check_params_cb=lambda kb, w: w == 0.7):
        for w in (0.2, 0.3, 0.7):  # quick edits: one write, the last value
            page.search.weight.setValue(w)
    kb = open_kb(name, settings=page.ctx.settings)
    try:
        assert kb.hybrid_weight == 0.7
    finally:
        kb.close()


def test_a_keyword_weight_that_cannot_be_saved_says_why_and_shows_the_stored_one(
        qtbot, page, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.errors import BackendUnavailable
    from desktop.pages.documents import jobs as documents_jobs

    index(qtbot, page, [write_weight_corpus(tmp_path / "d")])

    def server_gone(*_args):
        raise BackendUnavailable("the Chroma server at 127.0.0.1:8000 stopped answering",
                                 hint="Start it again, then retry.")

    monkeypatch.setattr(documents_jobs, "set_weight_job", server_gone)
    page.search.weight.setValue(0.9)
    qtbot.waitUntil(lambda: "stopped answering" in page.search.status.text(), timeout=LONG)
    assert page.search.weight.value() == 0.5  # what is stored, not what failed
    assert "keyword weight 0.5" in page.info.text()


class HeldSearches:
    """The page's search job, really searching, but holding its answer back until the test
    releases that query: ``arrived[q]`` is set once the answer is ready and waiting."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from desktop.pages.documents import jobs as documents_jobs

        self.real = documents_jobs.search_job
        self.arrived: dict[str, threading.Event] = {}
        self.release: dict[str, threading.Event] = {}
        monkeypatch.setattr(documents_jobs, "search_job", self.search)

    def hold(self, query: str) -> None:
        self.arrived[query], self.release[query] = threading.Event(), threading.Event()

    def search(self, job, settings, name: str, query: str, k: int):
        result = self.real(job, settings, name, query, k)
        if query in self.release:
            self.arrived[query].set()
            self.release[query].wait(60)
        return result  # found, even when the page has cancelled it meanwhile


def select(qtbot, page, name: str) -> None:
    """Click a knowledge base in the list and wait until its files are shown."""
    row = next(r for r in range(page.kb_list.count())
               if page.kb_list.item(r).data(Qt.ItemDataRole.UserRole) == name)
    with qtbot.waitSignal(page.files_loaded, timeout=LONG,
                          check_params_cb=lambda shown: shown == name):
        page.kb_list.setCurrentRow(row)


def test_a_search_paints_only_where_and_when_it_still_counts(
        qtbot, page, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docs = tmp_path / "manuals"
    write_corpus(docs, n_files=2, words=80)
    index(qtbot, page, [docs])
    with qtbot.waitSignal(page.settled, timeout=LONG):
        page.create_kb("Empty")
    select(qtbot, page, "Documents")
    held = HeldSearches(monkeypatch)
    painted: list[list[Any]] = []
    page.search_finished.connect(painted.append)

    # A slow search superseded by a quick one: only the quick one is ever painted.
    held.hold("river mountain")
    slow = page.run_search("river mountain")
    qtbot.waitUntil(held.arrived["river mountain"].is_set, timeout=LONG)
    with qtbot.waitSignal(page.search_finished, timeout=LONG):
        page.run_search("violin copper")
    shown = page.search.status.text()
    assert "“violin copper”" in shown and page.search.hits.topLevelItemCount() > 0
    first_hit = page.search.preview.toPlainText()
    held.release["river mountain"].set()
    qtbot.waitUntil(lambda: slow.is_done, timeout=LONG)
    assert len(painted) == 1
    assert page.search.status.text() == shown and page.search.preview.toPlainText() == first_hit

    # A search started on one knowledge base never paints on the one selected meanwhile.
    held.hold("silver orbit")
    moved = page.run_search("silver orbit")
    qtbot.waitUntil(held.arrived["silver orbit"].is_set, timeout=LONG)
    select(qtbot, page, "Empty")
    assert page.search.status.text() == "" and page.search.hits.topLevelItemCount() == 0
    held.release["silver orbit"].set()
    qtbot.waitUntil(lambda: moved.is_done, timeout=LONG)
    assert len(painted) == 1
    assert page.search.status.text() == "" and page.search.hits.topLevelItemCount() == 0
    assert page.search.preview.toPlainText() == ""

    # A cancelled search shows that it was cancelled, not what it found in the meantime.
    select(qtbot, page, "Documents")
    held.hold("garden music")
    stopped = page.run_search("garden music")
    qtbot.waitUntil(held.arrived["garden music"].is_set, timeout=LONG)
    stopped.cancel()
    held.release["garden music"].set()
    qtbot.waitUntil(lambda: stopped.is_done, timeout=LONG)
    assert len(painted) == 1
    assert page.search.status.text() == "Search cancelled."
    assert page.search.hits.topLevelItemCount() == 0


def test_new_knowledge_base_asks_name_embedder_mode_and_chunking(
        qtbot, page, ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx.settings.embedder.mode = "fast"  # the dialog starts from the settings
    seen: dict[str, Any] = {}

    def fill_in(dialog: KnowledgeBaseDialog) -> int:
        seen["defaults"] = (dialog.name.text(), dialog.embedder.text(),
                            dialog.mode.currentData(), dialog.chunk_tokens.value(),
                            dialog.overlap.value())
        ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
        dialog.name.setText("Manuals")
        dialog.chunk_tokens.setValue(128)
        dialog.overlap.setValue(100)  # more than half a chunk: refused with a sentence
        ok.click()
        seen["refused"] = (dialog.result(), dialog.problem.text())
        dialog.overlap.setValue(16)
        dialog.mode.setCurrentIndex(dialog.mode.findData("standard"))
        ok.click()
        return dialog.result()

    monkeypatch.setattr(KnowledgeBaseDialog, "exec", fill_in)
    with qtbot.waitSignal(page.settled, timeout=LONG):
        qtbot.mouseClick(page.new_button, Qt.MouseButton.LeftButton)
    assert seen["defaults"] == ("Documents", "minilm", "fast", 256, 32)
    assert seen["refused"][0] != QDialog.DialogCode.Accepted
    assert "overlap" in seen["refused"][1]
    assert page.current_kb == "Manuals"
    assert "128-token chunks, overlap 16" in page.info.text()
    assert "<b>standard</b> mode" in page.info.text()


def test_fast_mode_exports_first_with_visible_progress(
        qtbot, page, fake_export, tmp_path: Path) -> None:
    bar: list[tuple[int, bool]] = []
    page.progress.valueChanged.connect(lambda v: bar.append((v, page.progress_row.isHidden())))
    lines: list[str] = []
    page.runner.progress.connect(lambda _f, text: lines.append(text))
    with qtbot.waitSignal(page.settled, timeout=LONG):
        page.create_kb("Fast notes", mode="fast")
    assert fake_export["calls"] == [("fast", None)]
    assert (750, False) in bar  # the bar followed the export's own steps, visibly
    assert any("Preparing the fast embedder for this CPU" in line for line in lines)
    assert page.progress_row.isHidden()
    assert page.current_kb == "Fast notes" and "<b>fast</b> mode" in page.info.text()
    assert page.note.isHidden()  # nothing went wrong: nothing to explain
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=2, words=60)
    index(qtbot, page, [docs])
    assert page.files.row("note-001.txt")["Status"] == "Indexed"
    assert fake_export["calls"] == [("fast", None)]  # exported once

    # later, the fast mode cannot run here any more: re-indexing says what to do instead
    fake_export["ready"].clear()
    fake_export["fail"] = FeatureUnavailable("OpenVINO is not installed")
    runs: list[dict[str, Any]] = []
    page.indexing_finished.connect(runs.append)
    with qtbot.waitSignal(page.settled, timeout=LONG):
        qtbot.mouseClick(page.reindex_button, Qt.MouseButton.LeftButton)
    assert "OpenVINO is not installed" in runs[0]["error"]
    assert "Re-index with another embedder" in page.progress_text.text()
    assert page.files.row("note-001.txt")["Status"] == "Indexed"  # nothing was lost


def test_fastest_mode_is_calibrated_on_the_dropped_folder(
        qtbot, page, ctx, fake_export, tmp_path: Path) -> None:
    ctx.settings.embedder.mode = "fastest"
    docs = tmp_path / "mine"
    write_corpus(docs, n_files=2, words=200)
    index(qtbot, page, [docs])
    [(mode, passages)] = fake_export["calls"]
    assert mode == "fastest" and passages
    assert all(set(p.lower().replace(".", "").split()) <= set(WORDS) for p in passages)
    assert "<b>fastest</b> mode" in page.info.text()
    assert page.files.row("note-000.txt")["Status"] == "Indexed"


def test_cancelling_the_export_creates_nothing(qtbot, page, fake_export) -> None:
    fake_export["gate"] = threading.Event()

    def at_step_one(value: int) -> None:
        if value == 250:
            qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
            fake_export["gate"].set()

    page.progress.valueChanged.connect(at_step_one)
    with qtbot.waitSignal(page.kb_created, timeout=LONG) as created:
        page.create_kb("Never", mode="fastest")
    assert created.args[0] == {"cancelled": True}
    assert "was not created" in page.progress_text.text()
    assert page.progress_row.isHidden() and not page.busy
    with qtbot.waitSignal(page.settled, timeout=LONG):
        page.refresh()
    assert page.kb_list.count() == 0


def test_cancelling_once_the_knowledge_base_exists_keeps_it_and_says_so(
        qtbot, page, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import core.rag.knowledge_base as knowledge_base

    real_create = knowledge_base.create_kb
    made, release = threading.Event(), threading.Event()

    def create_then_wait(*args: Any, **kwargs: Any) -> Any:
        kb = real_create(*args, **kwargs)
        made.set()  # it exists now; the user presses Cancel before the job has returned
        release.wait(60)
        return kb

    monkeypatch.setattr(knowledge_base, "create_kb", create_then_wait)
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=2, words=60)
    runs: list[dict[str, Any]] = []
    page.indexing_finished.connect(runs.append)
    with qtbot.waitSignal(page.kb_created, timeout=LONG) as created:
        drop(page, [docs])  # on the empty page: create "Documents", then index the drop
        qtbot.waitUntil(made.is_set, timeout=LONG)
        qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
        release.set()
    assert created.args[0]["name"] == "Documents" and created.args[0]["cancelled"]
    assert "'Documents' was created, but nothing was indexed" in page.progress_text.text()
    qtbot.waitUntil(lambda: page.current_kb == "Documents" and not page.busy, timeout=LONG)
    assert page.files.topLevelItemCount() == 0 and not runs  # the drop was not indexed


def test_without_openvino_the_page_says_so_and_uses_standard(
        qtbot, page, ctx, fake_export, tmp_path: Path) -> None:
    ctx.settings.embedder.mode = "fast"
    fake_export["fail"] = FeatureUnavailable(
        "OpenVINO is not installed", hint="Install Corral's fast extra.")
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=1, words=60)
    index(qtbot, page, [docs])  # a drop on the empty page: created with the settings' mode
    assert page.files.row("note-000.txt")["Status"] == "Indexed"
    assert not page.note.isHidden()  # still there after the indexing run
    assert "OpenVINO is not installed" in page.note.text()
    assert "standard embedder" in page.note.text()
    assert "<b>standard</b> mode" in page.info.text()


def test_reindex_with_another_embedder_asks_then_rebuilds(
        qtbot, page, fake_export, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=2, words=80)
    index(qtbot, page, [docs])
    before = chunks_of(page)
    asked: list[str] = []
    answers = iter([QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes])

    def choose_fast(dialog: KnowledgeBaseDialog) -> int:
        asked.append(f"{dialog.embedder.text()}/{dialog.mode.currentData()}")  # current ones
        dialog.mode.setCurrentIndex(dialog.mode.findData("fast"))
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
        return dialog.result()

    monkeypatch.setattr(KnowledgeBaseDialog, "exec", choose_fast)
    monkeypatch.setattr(QMessageBox, "question",
                        lambda _parent, _title, text: asked.append(text) or next(answers))
    qtbot.mouseClick(page.change_embedder_button, Qt.MouseButton.LeftButton)
    assert asked[0] == "minilm/standard"
    assert "in fast mode" in asked[1] and f"Its {before} chunks are dropped" in asked[1]
    assert not page.busy and fake_export["calls"] == []  # "No": nothing happened

    with qtbot.waitSignal(page.settled, timeout=LONG):
        qtbot.mouseClick(page.change_embedder_button, Qt.MouseButton.LeftButton)
    assert fake_export["calls"] == [("fast", None)]
    assert "<b>fast</b> mode" in page.info.text() and chunks_of(page) == before
    assert "Rebuilt 'Documents'" in page.progress_text.text()
    assert page.files.row("note-001.txt")["Status"] == "Indexed"


def test_failed_health_check_offers_a_rebuild(
        qtbot, page, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.rag.indexing import IndexJob

    real_health = IndexJob._health

    def damaged(self, sample):
        ev = real_health(self, sample)
        ev.ok, ev.reason = False, ("2 of 8 sampled chunks could not find themselves: the "
                                   "index looks damaged; rebuild the knowledge base")
        return ev

    monkeypatch.setattr(IndexJob, "_health", damaged)
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=2, words=80)
    index(qtbot, page, [docs])
    assert not page.health_row.isHidden() and "index looks damaged" in page.health_text.text()
    assert page.rebuild_button.isEnabled()
    before = chunks_of(page)
    monkeypatch.setattr(IndexJob, "_health", real_health)
    with qtbot.waitSignal(page.settled, timeout=LONG):
        qtbot.mouseClick(page.rebuild_button, Qt.MouseButton.LeftButton)
    assert page.health_row.isHidden()
    assert "Rebuilt 'Documents'. Done: 2 indexed" in page.progress_text.text()
    assert chunks_of(page) == before


PROGRESS = re.compile(r"\d+/\d+ files · \d+ chunks · \d+\.\d chunks/s( · ETA \d+:\d\d)?")


def test_progress_shows_rate_and_eta_and_drops_meanwhile_are_queued(
        qtbot, page, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_corpus(first, n_files=12, words=400)
    write_corpus(second, n_files=1, words=80)
    lines: list[str] = []
    page.runner.index_event.connect(lambda _ev: lines.append(page.progress_text.text()))
    runs: list[dict[str, Any]] = []
    page.indexing_finished.connect(runs.append)
    with qtbot.waitSignal(page.settled, timeout=LONG):
        drop(page, [first])
        drop(page, [second])  # while the first is still running
        assert "queued" in page.progress_text.text()
        assert page.create_kb("Other") is None  # one job at a time, said in a sentence
        assert "Wait until the current job ends" in page.progress_text.text()
    assert [r["paths"] for r in runs] == [[str(first)], [str(second)]]
    assert runs[0]["indexed"] == 12 and runs[1]["indexed"] == 1
    assert lines and all(PROGRESS.search(line) for line in lines)
    assert any("ETA" in line for line in lines)
    assert any("then 1 queued drop" in line for line in lines)
    assert page.files.row("first/note-000.txt") and page.files.row("second/note-000.txt")


def test_cancel_keeps_finished_files_and_a_new_drop_resumes(qtbot, page, tmp_path: Path) -> None:
    docs = tmp_path / "many"
    write_corpus(docs, n_files=12, words=400)
    (docs / "0-junk.bin").write_bytes(os.urandom(2000))  # read first: its event comes early

    def on_event(ev) -> None:
        if ev.kind == "file" and page.cancel_button.isEnabled():
            qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)

    page.runner.index_event.connect(on_event)
    runs: list[dict[str, Any]] = []
    page.indexing_finished.connect(runs.append)
    with qtbot.waitSignal(page.settled, timeout=LONG):
        drop(page, [docs])
    assert runs[0]["cancelled"] and runs[0]["indexed"] < 12
    assert "Cancelled" in page.progress_text.text()
    done_first = runs[0]["indexed"]
    page.runner.index_event.disconnect(on_event)
    index(qtbot, page, [docs])
    assert runs[1]["unchanged"] == done_first
    assert runs[1]["indexed"] == 12 - done_first
