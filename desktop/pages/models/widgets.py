"""The Models page's detail panel (summary, chat template, Modelfile, metadata, SHA-256) and
the highlighter that colours template tags, strings and special tokens in it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QRegularExpression, Qt
from PySide6.QtGui import QColor, QSyntaxHighlighter, QTextCharFormat, QTextDocument
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.units import human_size

if TYPE_CHECKING:
    from core.models.catalog import ModelEntry


class TemplateHighlighter(QSyntaxHighlighter):
    """Jinja / Go template tags, strings and special tokens, in the chat template view."""

    def __init__(self, document: QTextDocument) -> None:
        super().__init__(document)

        def fmt(color: str, bold: bool = False) -> QTextCharFormat:
            f = QTextCharFormat()
            f.setForeground(QColor(color))
            if bold:
                f.setFontWeight(700)
            return f

        self.rules = [
            (QRegularExpression(r"\{%-?.*?-?%\}"), fmt("#6a1b9a", True)),
            (QRegularExpression(r"\{\{-?.*?-?\}\}"), fmt("#0277bd", True)),
            (QRegularExpression(r"\{#.*?#\}"), fmt("#78909c")),
            (QRegularExpression(r"'[^']*'|\"[^\"]*\""), fmt("#2e7d32")),
            (QRegularExpression(r"<\|?[A-Za-z_/]+\|?>|\[/?INST\]|<</?SYS>>"), fmt("#c62828", True)),
        ]

    def highlightBlock(self, text: str) -> None:  # noqa: N802 (Qt name)
        for pattern, style in self.rules:
            it = pattern.globalMatch(text)
            while it.hasNext():
                m = it.next()
                self.setFormat(m.capturedStart(), m.capturedLength(), style)


def _text_view() -> QPlainTextEdit:
    view = QPlainTextEdit()
    view.setReadOnly(True)
    view.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
    view.setStyleSheet("font-family: monospace;")
    return view


class DetailPanel(QWidget):
    """Everything about the selected model."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel("Select a model to see its details.")
        self.title.setObjectName("pageTitle")
        self.title.setWordWrap(True)
        layout.addWidget(self.title)
        self.problem = QLabel()
        self.problem.setObjectName("errorText")
        self.problem.setWordWrap(True)
        self.problem.hide()
        layout.addWidget(self.problem)
        self.tabs = QTabWidget()
        layout.addWidget(self.tabs, 1)
        summary = QWidget()
        self.form = QFormLayout(summary)
        self.tabs.addTab(summary, "Summary")
        self.template = _text_view()
        self.highlighter = TemplateHighlighter(self.template.document())
        self.tabs.addTab(self.template, "Chat template")
        self.modelfile = _text_view()
        self.modelfile_highlighter = TemplateHighlighter(self.modelfile.document())
        self.tabs.addTab(self.modelfile, "Modelfile")
        self.metadata = QTableWidget(0, 2)
        self.metadata.setHorizontalHeaderLabels(["Key", "Value"])
        self.metadata.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.metadata.verticalHeader().hide()
        self.metadata.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.tabs.addTab(self.metadata, "Metadata")
        row = QHBoxLayout()
        self.sha = QLabel("SHA-256: –")
        self.sha.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.sha.setWordWrap(True)
        self.sha_button = QPushButton("Compute SHA-256")
        self.sha_button.hide()
        row.addWidget(self.sha, 1)
        row.addWidget(self.sha_button)
        layout.addLayout(row)
        self.chat_button = QPushButton("Chat with it")
        self.chat_button.setObjectName("primary")
        self.chat_button.setEnabled(False)
        layout.addWidget(self.chat_button)

    def clear(self, text: str = "Select a model to see its details.") -> None:
        self.title.setText(text)
        self.problem.hide()
        while self.form.rowCount():
            self.form.removeRow(0)
        self.template.setPlainText("")
        self.modelfile.setPlainText("")
        self.metadata.setRowCount(0)
        self.sha.setText("SHA-256: –")
        self.sha_button.hide()
        self.chat_button.setEnabled(False)

    def show_error(self, title: str, sentence: str) -> None:
        self.clear(title)
        self.problem.setText(sentence)
        self.problem.show()

    def show_info(self, entry: ModelEntry, info: dict[str, Any]) -> None:
        self.clear(f"{entry.name} — {entry.source_label}")
        s = info.get("summary") or {}
        rows = [("Reference", entry.ref), ("File", info.get("path") or "–"),
                ("Architecture", s.get("architecture")), ("Name in file", s.get("name")),
                ("Parameters", s.get("parameter_size")), ("Quantization", s.get("quantization")),
                ("Context length", s.get("context_length")),
                ("Embedding length", s.get("embedding_length")), ("Layers", s.get("block_count")),
                ("Attention heads", s.get("head_count")), ("KV heads", s.get("head_count_kv")),
                ("Tokenizer", s.get("tokenizer_model")), ("Vocabulary", s.get("vocab_size")),
                ("File size", human_size(s.get("file_size") or entry.file_size, empty="–"))]
        for label, value in rows:
            if value not in (None, ""):
                text = QLabel(str(value))
                text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
                text.setWordWrap(True)
                self.form.addRow(label, text)
        template = s.get("chat_template") or ""
        self.template.setPlainText(template or "This model has no chat template in its file.")
        problems = list(info.get("problems") or [])
        if info.get("template_problem"):
            problems.insert(0, f"This chat template is unsafe: {info['template_problem']}.")
        if problems:
            self.problem.setText(" ".join(problems))
            self.problem.show()
        ollama = info.get("ollama") or {}
        parts = []
        for key, label in (("template", "TEMPLATE"), ("system", "SYSTEM"),
                           ("parameters", "PARAMETERS"), ("license", "LICENSE")):
            if ollama.get(key):
                parts.append(f"# {label}\n{ollama[key]}")
        self.modelfile.setPlainText("\n\n".join(parts) if parts
                                    else "Not an Ollama model: it has no Modelfile.")
        meta = info.get("metadata") or {}
        lengths = info.get("array_lengths") or {}
        self.metadata.setRowCount(len(meta))
        for i, key in enumerate(sorted(meta)):
            value = meta[key]
            shown = (f"[{lengths[key]} items] {value}" if key in lengths else str(value))
            self.metadata.setItem(i, 0, QTableWidgetItem(key))
            self.metadata.setItem(i, 1, QTableWidgetItem(shown[:500]))
        self.metadata.resizeColumnToContents(0)
        sha = info.get("sha256") or (entry.digest if entry.source != "ollama" else "")
        if sha:
            self.sha.setText(f"SHA-256: {sha}")
        elif entry.source == "ollama":
            self.sha.setText(f"Ollama manifest digest: {entry.digest or '–'}")
        elif info.get("path"):
            self.sha_button.show()
        self.chat_button.setEnabled(not entry.problem and not info.get("template_problem"))
