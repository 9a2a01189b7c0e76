"""Layout pieces several pages share."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QScrollArea, QVBoxLayout, QWidget


def page_title(layout: QVBoxLayout, text: str) -> QLabel:
    """The page's title line, styled by the 'pageTitle' rule of the style sheet."""
    title = QLabel(text)
    title.setObjectName("pageTitle")
    layout.addWidget(title)
    return title


def scrolling_column(layout: QVBoxLayout) -> QVBoxLayout:
    """A vertical column inside a scroll area that takes the rest of ``layout``."""
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    body = QWidget()
    column = QVBoxLayout(body)
    scroll.setWidget(body)
    layout.addWidget(scroll, 1)
    return column
