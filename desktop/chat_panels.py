"""Side pieces of the Chat page: the conversation list, the generation parameters form, the
context-window meter and the prompt inspector."""

from __future__ import annotations

import html
from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.chat.backends import PreparedPrompt
from core.chat.params import GenerationParams
from core.chat.store import Conversation


class ConversationList(QWidget):
    """Search box, the stored conversations (newest first) and what to do with them."""

    chosen = Signal(int)  # conversation id
    new_requested = Signal()
    rename_requested = Signal(int)
    delete_requested = Signal(int)
    export_requested = Signal(int, str)  # id, 'markdown' | 'json'

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.new_button = QPushButton("New chat")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search conversations")
        self.search.setClearButtonEnabled(True)
        self.list = QListWidget()
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
        self.list.currentItemChanged.connect(self._current_changed)
        self.rename_button.clicked.connect(lambda: self._emit(self.rename_requested))
        self.delete_button.clicked.connect(lambda: self._emit(self.delete_requested))
        self.export_md.clicked.connect(lambda: self._export("markdown"))
        self.export_json.clicked.connect(lambda: self._export("json"))
        self._quiet = False
        self.set_conversations([], None)

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return int(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def set_conversations(self, convs: Sequence[Conversation], current: int | None) -> None:
        self._quiet = True
        self.list.clear()
        for conv in convs:
            item = QListWidgetItem(conv.title or "(untitled)")
            item.setData(Qt.ItemDataRole.UserRole, conv.id)
            item.setToolTip(f"{conv.model} · {conv.format}")
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

    def _emit(self, signal: Signal) -> None:
        cid = self.current_id()
        if cid is not None:
            signal.emit(cid)  # type: ignore[attr-defined]

    def _export(self, kind: str) -> None:
        cid = self.current_id()
        if cid is not None:
            self.export_requested.emit(cid, kind)


class ParamsForm(QWidget):
    """Temperature, top-p, top-k, repeat penalty, context length, max tokens, seed, stops."""

    def __init__(self, params: GenerationParams, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        self.temperature = self._double(0.0, 5.0, 0.05, params.temperature)
        self.top_p = self._double(0.01, 1.0, 0.05, params.top_p)
        self.top_k = self._int(0, 1000, params.top_k)
        self.repeat_penalty = self._double(0.5, 3.0, 0.05, params.repeat_penalty)
        self.context_length = self._int(0, 1_048_576, params.context_length)
        self.context_length.setSpecialValueText("model default")
        self.max_tokens = self._int(1, 1_000_000, params.max_tokens)
        self.seed = self._int(-1, 2_147_483_647, -1 if params.seed is None else params.seed)
        self.seed.setSpecialValueText("random")
        self.stop = QPlainTextEdit("\n".join(params.stop))
        self.stop.setPlaceholderText("one stop string per line")
        self.stop.setMaximumHeight(54)
        for label, w in (("Temperature", self.temperature), ("Top-p", self.top_p),
                         ("Top-k", self.top_k), ("Repeat penalty", self.repeat_penalty),
                         ("Context length", self.context_length), ("Max tokens", self.max_tokens),
                         ("Seed", self.seed), ("Stop strings", self.stop)):
            form.addRow(label, w)

    @staticmethod
    def _double(lo: float, hi: float, step: float, value: float) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(lo, hi)
        box.setSingleStep(step)
        box.setDecimals(2)
        box.setValue(value)
        return box

    @staticmethod
    def _int(lo: int, hi: int, value: int) -> QSpinBox:
        box = QSpinBox()
        box.setRange(lo, hi)
        box.setValue(value)
        return box

    def params(self) -> GenerationParams:
        seed = self.seed.value()
        return GenerationParams(
            temperature=self.temperature.value(), top_p=self.top_p.value(),
            top_k=self.top_k.value(), repeat_penalty=self.repeat_penalty.value(),
            max_tokens=self.max_tokens.value(), context_length=self.context_length.value(),
            seed=None if seed < 0 else seed,
            stop=[s for s in self.stop.toPlainText().split("\n") if s])

    def set_params(self, p: GenerationParams) -> None:
        self.temperature.setValue(p.temperature)
        self.top_p.setValue(p.top_p)
        self.top_k.setValue(p.top_k)
        self.repeat_penalty.setValue(p.repeat_penalty)
        self.context_length.setValue(p.context_length)
        self.max_tokens.setValue(p.max_tokens)
        self.seed.setValue(-1 if p.seed is None else p.seed)
        self.stop.setPlainText("\n".join(p.stop))


class ContextMeter(QProgressBar):
    """Tokens used by the system prompt, the history and the answer so far, of the context."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextVisible(True)
        self.setMaximumHeight(18)
        self.system = self.history = self.answer = 0
        self.length: int | None = None
        self.exact = True
        self.show_counts(0, 0, None)

    def show_counts(self, system: int, history: int, length: int | None, *,
                    exact: bool = True) -> None:
        self.system, self.history, self.length, self.exact = system, history, length, exact
        self.answer = 0
        self._update()

    def set_answer(self, tokens: int) -> None:
        self.answer = tokens
        self._update()

    def _update(self) -> None:
        used = self.system + self.history + self.answer
        approx = "" if self.exact else "≈"
        of = f" / {self.length}" if self.length else ""
        self.setFormat(f"context: system {approx}{self.system} + history {approx}{self.history}"
                       f" + answer {self.answer} = {approx}{used}{of} tokens")
        self.setRange(0, max(self.length or used or 1, 1))
        self.setValue(min(used, self.maximum()))
        full = bool(self.length) and used > 0.9 * (self.length or 0)
        self.setStyleSheet("QProgressBar::chunk { background: %s; }"
                           % ("#e53935" if full else "#4fc3f7"))


def inspector_html(prompt: PreparedPrompt) -> str:
    """The exact prompt with special tokens highlighted and line ends made visible."""
    special = ("<span style='background-color:#ffe082; color:#5d4037'><b>{}</b></span>")
    out: list[str] = []

    def text(t: str) -> str:
        esc = html.escape(t).replace(" ", "&nbsp;")
        return esc.replace("\n", "<span style='color:#b0bec5'>↵</span><br>")

    if prompt.rendered is None:
        return "<pre>" + html.escape(prompt.exact_text) + "</pre>"
    for seg in prompt.rendered.segments:
        if seg.kind == "special":
            lead = seg.display[: seg.display.find(seg.text)]
            tail = seg.display[seg.display.find(seg.text) + len(seg.text):]
            out.append(text(lead) + special.format(html.escape(seg.text)) + text(tail))
        else:
            out.append(text(seg.display))
    return "<div style='font-family:monospace'>" + "".join(out) + "</div>"


class PromptInspector(QWidget):
    """What the model receives, exactly, with its token count by the model's own tokenizer."""

    send_to_tokens = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Prompt inspector")
        title.setObjectName("pageTitle")
        self.summary = QLabel("Type a message to see the exact prompt the model will receive.")
        self.summary.setWordWrap(True)
        self.view = QTextBrowser()
        self.to_tokens = QPushButton("Open in Tokens")
        self.to_tokens.setEnabled(False)
        for w in (title, self.summary, self.view, self.to_tokens):
            layout.addWidget(w)
        self.text = ""
        self.to_tokens.clicked.connect(lambda: self.send_to_tokens.emit(self.text))

    def show_prompt(self, prompt: PreparedPrompt, backend_kind: str) -> None:
        self.text = prompt.exact_text
        count = (f"{prompt.token_count} tokens by the model's own tokenizer"
                 if prompt.token_count is not None else "token count not available")
        how = {"gguf": "sent to llama.cpp as token ids (special tokens by id, your text with "
                       "special-token parsing off)",
               "ollama": "sent to Ollama in raw mode without the leading <s> (Ollama adds it)"}
        note = how.get(backend_kind, "")
        if prompt.rendered is None:
            note = "sent to Ollama as messages; Ollama applies its own template"
        fmt = prompt.rendered.format if prompt.rendered else "Ollama template"
        extra = "; ".join(prompt.rendered.notes) if prompt.rendered else ""
        self.summary.setText(f"Format {fmt} · {count} · {note}" + (f" · {extra}" if extra else ""))
        self.view.setHtml(inspector_html(prompt))
        self.to_tokens.setEnabled(True)

    def show_problem(self, sentence: str) -> None:
        self.summary.setText(sentence)
        self.view.clear()
        self.to_tokens.setEnabled(False)
