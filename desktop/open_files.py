"""Files handed to Corral from outside (`corral FILE...`, a drop on the menu entry, a second
`corral` process): shown on Documents, ready to index into the knowledge base the user picks.

Indexing itself is the Documents page's own add-files flow (``add_paths`` / ``create_kb``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QVBoxLayout,
    QWidget,
)

DEFAULT_NAME = "Documents"


class OpenFilesDialog(QDialog):
    """Which knowledge base should these files go into? An existing one, or a new name."""

    def __init__(self, page: Any, files: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.page = page
        self.setWindowTitle("Index files")
        self.setMinimumWidth(460)
        layout = QVBoxLayout(self)
        self.heading = QLabel()
        layout.addWidget(self.heading)
        self.file_list = QListWidget()
        layout.addWidget(self.file_list, 1)
        layout.addWidget(QLabel("Into the knowledge base (pick one, or type a new name):"))
        self.kb_choice = QComboBox()
        self.kb_choice.setEditable(True)
        self.kb_choice.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        layout.addWidget(self.kb_choice)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.index_button = buttons.addButton("Index", QDialogButtonBox.ButtonRole.AcceptRole)
        self.index_button.setObjectName("primary")
        self.index_button.setDefault(True)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.kb_choice.editTextChanged.connect(lambda text: self.index_button.setEnabled(bool(text.strip())))
        self.files: list[str] = []
        self.add_files(files)
        self.show_knowledge_bases()
        loaded = getattr(page, "knowledge_bases_loaded", None)
        if loaded is not None:  # the list may still be loading when files arrive at start-up
            loaded.connect(self._knowledge_bases_loaded)  # a method: gone with the dialog

    def add_files(self, files: list[str]) -> None:
        """Add more files (a second hand-over while the dialog is open); duplicates are kept once."""
        for f in files:
            if f not in self.files:
                self.files.append(f)
                self.file_list.addItem(f)
                item = self.file_list.item(self.file_list.count() - 1)
                item.setToolTip(f)
                item.setText(Path(f).name + ("/" if Path(f).is_dir() else ""))
        n = len(self.files)
        self.heading.setText(f"<b>{n} {'file' if n == 1 else 'files'} ready to index</b>")

    def knowledge_bases(self) -> list[str]:
        kb_list = getattr(self.page, "kb_list", None)
        if kb_list is None:
            return []
        return [str(kb_list.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(kb_list.count())]

    def show_knowledge_bases(self) -> None:
        typed = self.kb_choice.currentText().strip()
        names = self.knowledge_bases()
        current = typed or getattr(self.page, "current_kb", None) or (names[0] if names else DEFAULT_NAME)
        self.kb_choice.blockSignals(True)
        self.kb_choice.clear()
        self.kb_choice.addItems(names)
        self.kb_choice.blockSignals(False)
        self.kb_choice.setEditText(current)
        self.index_button.setEnabled(bool(current))

    def _knowledge_bases_loaded(self, _infos: list[object]) -> None:
        self.show_knowledge_bases()

    @property
    def chosen(self) -> str:
        return self.kb_choice.currentText().strip()

    def accept(self) -> None:
        name = self.chosen
        if not name:
            return
        if name in self.knowledge_bases():
            kb_list = self.page.kb_list
            for i in range(kb_list.count()):
                if kb_list.item(i).data(Qt.ItemDataRole.UserRole) == name:
                    kb_list.setCurrentRow(i)
            self.page.add_paths(list(self.files))
        else:
            self.page.create_kb(name, paths=list(self.files), exist_ok=True)
        super().accept()


def offer_files(page: QWidget, files: list[str], current: QWidget | None) -> OpenFilesDialog | None:
    """Show ``files`` on the Documents ``page``, ready to index (into ``current``'s dialog if
    one is still open). None when the page cannot index (it did not load)."""
    if not hasattr(page, "add_paths"):
        return None
    if isinstance(current, OpenFilesDialog) and shiboken6.isValid(current) and current.isVisible():
        current.add_files(files)
        current.raise_()
        return current
    dialog = OpenFilesDialog(page, files, parent=page)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.open()
    return dialog
