"""The Chat page's controls: the setup above the transcript (model, prompt format, parameters,
documents, inspector, system prompt) and the composer below it (message box and buttons)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.chat.params import GenerationParams
from core.config import ChatSettings
from core.errors import CorralError
from desktop.pages.chat.panels import ParamsForm

log = logging.getLogger("corral.desktop.chat")

FORMAT_CHOICES = [("Auto (from the model)", "auto"), ("Llama 2 / Code Llama", "llama2"),
                  ("Code Llama 70B", "codellama70b"), ("Model's own template", "model"),
                  ("Plain completion (base model)", "raw")]


def known_models(default_model: str) -> list[str]:
    """The references the model box offers: the default model, then the imported GGUFs."""
    refs: list[str] = []
    if default_model:
        refs.append(default_model)
    try:
        from core.models import library

        refs += [m.name for m in library.load()]
    except CorralError as exc:  # an unreadable list: typing a reference still works
        log.warning("the model box lists no imported models: %s", exc.sentence())
    return list(dict.fromkeys(refs))


def _switch(text: str) -> QToolButton:
    button = QToolButton()
    button.setText(text)
    button.setCheckable(True)
    return button


class ChatSetup(QWidget):
    """What to talk to and how. Two rows (one row overflows at 1280 px): the model, its prompt
    format and the guard's note; the Parameters switch, the documents switch and picker, and
    Inspect prompt. Below them: why Auto picks its format, the parameters, the system prompt."""

    def __init__(self, chat: ChatSettings, models: Sequence[str], use_docs: QWidget,
                 kb_box: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model_box = QComboBox()
        self.model_box.setEditable(True)
        self.model_box.setMinimumWidth(240)
        line = self.model_box.lineEdit()
        assert line is not None  # an editable combo box has its line edit
        line.setPlaceholderText("ollama:NAME, a .gguf path, or a model name")
        for ref in models:
            self.model_box.addItem(ref)
        self.model_box.setCurrentIndex(-1)
        self.format_box = QComboBox()
        for label, key in FORMAT_CHOICES:
            self.format_box.addItem(label, key)
        fmt = "llama2" if chat.prompt_format == "codellama" else chat.prompt_format
        self.format_box.setCurrentIndex(max(self.format_box.findData(fmt), 0))
        self.format_note = QLabel("")
        self.format_note.setObjectName("emptyState")
        self.params_button = _switch("Parameters")
        self.params_form = ParamsForm(GenerationParams.from_settings(chat))
        self.params_form.setVisible(False)
        self.params_button.toggled.connect(self.params_form.setVisible)
        self.inspect_button = _switch("Inspect prompt")
        self.guard_note = QLabel("")
        self.guard_note.setObjectName("emptyState")
        self.system_edit = QPlainTextEdit(chat.system_prompt)
        self.system_edit.setPlaceholderText("System prompt (optional)")
        self.system_edit.setMaximumHeight(48)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        first, second = QHBoxLayout(), QHBoxLayout()
        widgets: tuple[QWidget, ...] = (QLabel("Model"), self.model_box, QLabel("Format"),
                                        self.format_box)
        for w in widgets:
            first.addWidget(w)
        first.addStretch(1)
        first.addWidget(self.guard_note)
        for w in (self.params_button, use_docs, kb_box, self.inspect_button):
            second.addWidget(w)
        second.addStretch(1)
        col.addLayout(first)
        col.addLayout(second)
        for w in (self.format_note, self.params_form, self.system_edit):
            col.addWidget(w)


class Composer(QWidget):
    """The message box with Send, Stop and Retrieval only beside it, and above it the note
    shown while an earlier message is being edited."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit_note = QLabel("Editing an earlier message: Send replaces it and everything "
                                "after it (Esc cancels).")
        self.edit_note.setVisible(False)
        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Message (Ctrl+Enter to send)")
        self.input.setMaximumHeight(96)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("primary")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.retrieval_button = QPushButton("Retrieval only")
        self.retrieval_button.setToolTip("Show the passages the knowledge base gives the typed "
                                         "message, with their scores, without generating.")
        self.retrieval_button.setEnabled(False)
        buttons = QVBoxLayout()
        for b in (self.send_button, self.stop_button, self.retrieval_button):
            buttons.addWidget(b)
        row = QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addLayout(buttons)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self.edit_note)
        col.addLayout(row)

    def start_edit(self, text: str) -> None:
        """Put an earlier message in the box to edit, with the note."""
        self.input.setPlainText(text)
        self.edit_note.setVisible(True)
        self.input.setFocus()

    def end_edit(self) -> None:
        self.edit_note.setVisible(False)
