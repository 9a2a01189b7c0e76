"""The About box: the icon, the version, and which optional parts this Corral has."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from core import __version__
from core.components import components


class AboutDialog(QDialog):
    def __init__(self, icon: QIcon, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About Corral")
        layout = QVBoxLayout(self)
        head = QHBoxLayout()
        logo = QLabel()
        logo.setPixmap(icon.pixmap(72, 72))
        head.addWidget(logo, 0, Qt.AlignmentFlag.AlignTop)
        self.title = QLabel(
            f"<h2>Corral {__version__}</h2>"
            "<p>A desktop workbench for running language models on your own machine.<br>"
            "MIT licensed. Offline by default.</p>")
        self.title.setWordWrap(True)
        head.addWidget(self.title, 1)
        layout.addLayout(head)
        layout.addWidget(QLabel("<b>What this Corral has</b>"))
        grid = QGridLayout()
        grid.setHorizontalSpacing(14)
        self.rows: dict[str, QLabel] = {}
        for row, part in enumerate(components()):
            state = QLabel("✔ present" if part.present else "✘ missing")
            state.setStyleSheet(f"color: {'#2e7d32' if part.present else '#c62828'}; font-weight: 600;")
            needs = QLabel(f"{part.feature}<br><span style='color:#607d8b'>needs {part.needs}"
                           + (f"; {part.detail}" if part.detail and not part.present else "") + "</span>")
            needs.setWordWrap(True)
            if part.detail:
                needs.setToolTip(part.detail)
            grid.addWidget(state, row, 0, Qt.AlignmentFlag.AlignTop)
            grid.addWidget(needs, row, 1)
            self.rows[part.feature] = state
        grid.setColumnStretch(1, 1)
        layout.addLayout(grid)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.setFixedWidth(540)
        self.setFixedHeight(layout.totalHeightForWidth(540))  # wrapped text, no gaps
