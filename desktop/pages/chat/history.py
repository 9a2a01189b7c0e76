"""The Chat page's conversation list: search the stored conversations, choose one, start a new
one, and rename, delete or export (Markdown, JSON) the chosen one, straight in the history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from core.chat.store import Conversation, HistoryStore


class FittedTitles(QStyledItemDelegate):
    """Titles as wide as the list at most, so a long one ends in "…" (its tooltip has it all)
    instead of widening the list past its edge."""

    def __init__(self, view: QListView) -> None:
        super().__init__(view)
        self.view = view

    def sizeHint(self, option: QStyleOptionViewItem,  # noqa: N802 (Qt name)
                 index: QModelIndex | QPersistentModelIndex) -> QSize:
        hint = super().sizeHint(option, index)
        return QSize(min(hint.width(), self.view.viewport().width()), hint.height())


class ConversationList(QWidget):
    """Search box, the stored conversations (newest first) and what to do with them."""

    chosen = Signal(int)  # conversation id
    new_requested = Signal()
    refresh_requested = Signal()  # the search changed or a title did: fill the list again
    deleted = Signal(int)  # conversation id, gone from the history
    exported = Signal(str)  # the file written

    def __init__(self, store: HistoryStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.new_button = QPushButton("New chat")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search conversations")
        self.search.setClearButtonEnabled(True)
        self.list = QListWidget()
        self.list.setItemDelegate(FittedTitles(self.list))
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)  # titles refit as it resizes
        row = QHBoxLayout()
        self.rename_button = QPushButton("Rename")
        self.delete_button = QPushButton("Delete")
        row.addWidget(self.rename_button)
        row.addWidget(self.delete_button)
        row2 = QHBoxLayout()
        self.export_md = QPushButton("Export .md")
        self.export_json = QPushButton("Export .json")
        row2.addWidget(self.export_md)
        row2.addWidget(self.export_json)
        for w in (self.new_button, self.search, self.list):
            layout.addWidget(w)
        layout.addLayout(row)
        layout.addLayout(row2)
        self.new_button.clicked.connect(self.new_requested)
        self.search.textChanged.connect(lambda _t: self.refresh_requested.emit())
        self.list.currentItemChanged.connect(self._current_changed)
        self.rename_button.clicked.connect(lambda: self._for_current(self.rename))
        self.delete_button.clicked.connect(lambda: self._for_current(self.delete))
        self.export_md.clicked.connect(
            lambda: self._for_current(lambda cid: self.export(cid, "markdown")))
        self.export_json.clicked.connect(
            lambda: self._for_current(lambda cid: self.export(cid, "json")))
        self._quiet = False
        self.set_conversations([], None)

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return int(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def refresh(self, current: int | None) -> None:
        """Fill the list from the history (what the search matches), ``current`` selected."""
        self.set_conversations(self.store.conversations(search=self.search.text().strip()),
                               current)

    def set_conversations(self, convs: Sequence[Conversation], current: int | None) -> None:
        self._quiet = True
        self.list.clear()
        for conv in convs:
            item = QListWidgetItem(conv.title or "(untitled)")
            item.setData(Qt.ItemDataRole.UserRole, conv.id)
            item.setToolTip(f"{conv.title or '(untitled)'}\n{conv.model} · {conv.format}")
            self.list.addItem(item)
            if conv.id == current:
                self.list.setCurrentItem(item)
        self._quiet = False
        has = self.current_id() is not None
        for b in (self.rename_button, self.delete_button, self.export_md, self.export_json):
            b.setEnabled(has)

    def _current_changed(self, item: QListWidgetItem | None, _old: object) -> None:
        has = item is not None
        for b in (self.rename_button, self.delete_button, self.export_md, self.export_json):
            b.setEnabled(has)
        if item is not None and not self._quiet:
            self.chosen.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    # --- what to do with the chosen conversation ----------------------------------------

    def _for_current(self, action: Callable[[int], None]) -> None:
        cid = self.current_id()
        if cid is not None:
            action(cid)

    def rename(self, cid: int) -> None:
        title, ok = QInputDialog.getText(self, "Rename conversation", "Title",
                                         text=self.store.conversation(cid).title)
        if ok and title.strip():
            self.store.rename(cid, title)
            self.refresh_requested.emit()

    def delete(self, cid: int) -> None:
        sure = QMessageBox.question(self, "Delete conversation",
                                    "Delete this conversation and all its messages?")
        if sure == QMessageBox.StandardButton.Yes:
            self.store.delete_conversation(cid)
            self.deleted.emit(cid)

    def export(self, cid: int, kind: str, path: str | None = None) -> None:
        """Write the conversation as ``kind`` ('markdown' | 'json') to ``path`` (None: ask)."""
        from core.chat.export import to_json, to_markdown
        from core.config import atomic_write_text

        suffix = ".md" if kind == "markdown" else ".json"
        if path is None:
            title = self.store.conversation(cid).title or "conversation"
            safe = "".join(c if c.isalnum() or c in " -_" else "_" for c in title).strip()
            path, _ = QFileDialog.getSaveFileName(self, "Export conversation",
                                                  str(Path.home() / f"{safe}{suffix}"))
        if path:
            text = to_markdown(self.store, cid) if kind == "markdown" else to_json(self.store, cid)
            atomic_write_text(Path(path), text)
            self.exported.emit(path)
