"""Tokens page: how several tokenizers split one text, side by side, plus BPE step by step."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.analysis.bpe_steps import CLASSIC_TEXT, BpeStep, bpe_steps
from core.analysis.one_hot import one_hot
from core.analysis.token_sources import BPE_REFS, WORDPIECE_REFS
from core.analysis.tokens import TokenizedText, differing_cuts
from core.config import Settings
from desktop.context import AppContext
from desktop.jobs import Job, Worker
from desktop.pages.tokens.widgets import TokenStrip, tokens_summary_html

if TYPE_CHECKING:
    from core.analysis.token_sources import TextTokenizer

EMPTY_TEXT = (
    "A token is the unit a model actually reads: a word, a piece of a word, or a single byte. "
    "Type or paste text above (or send a prompt here from Chat) to see how each tokenizer cuts "
    "it. Hover a token for its id and exact bytes; red bars mark places where the tokenizers "
    "disagree."
)
ONE_HOT_NOTE = (
    "One-hot: each word is a vector as long as the vocabulary with a single 1. Every two "
    "different words are equally far apart, so nothing says 'cat' is closer to 'kitten' than "
    "to 'bank'. Embeddings (next page) are dense vectors where similar meanings sit close."
)
BPE_NOTE = (
    "Byte-pair encoding starts from single characters and repeatedly merges the most frequent "
    "neighbouring pair into a new token. Step through the merges to watch the vocabulary grow."
)
STOPPED_TEXT = "Tokenizing stopped: the tokens below are for the text tokenized before."
MAX_ONE_HOT_WORDS = 16
MAX_BPE_CHARS = 20_000
#: the job groups of this page: a newer job of a group supersedes the older one
TOKENIZE_GROUP = "tokens"
MODELS_GROUP = "tokens-models"

#: (reference, the tokenizer opened for it before, or None)
TokenizerEntry = tuple[str, "TextTokenizer | None"]


def _tokenize_job(job: Job, text: str, entries: list[TokenizerEntry],
                  settings: Settings, parse_special: bool = False) -> list[TokenizedText]:
    """Worker: open each tokenizer (cached objects are passed in) and split the text;
    ``parse_special``: a model's vocabulary reads the text as a rendered prompt.

    Each opened tokenizer goes out as a partial ``(ref, tokenizer)`` for the page's cache."""
    from core.analysis.token_sources import open_tokenizer

    results: list[TokenizedText] = []
    for n, (ref, tokenizer) in enumerate(entries):
        job.check()
        job.progress(n / max(1, len(entries)), f"Tokenizing with {ref}")
        tok = tokenizer if tokenizer is not None else open_tokenizer(
            ref, settings, train_text=text, parse_special=parse_special)
        result = tok.tokenize(text)
        job.partial((ref, tok))
        results.append(result)
    return results


def _local_models_job(job: Job, settings: Settings) -> list[str]:
    from core.analysis.token_sources import local_model_refs

    return local_model_refs(settings)


class TokensPage(QWidget):
    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.results: list[TokenizedText] = []
        # ref -> opened tokenizer (a trained BPE is keyed by its text)
        self._tokenizers: dict[str, TextTokenizer] = {}
        self._worker: Worker[list[TokenizedText]] | None = None  # the latest tokenize job
        self._steps: list[BpeStep] = []

        outer = QVBoxLayout(self)
        title = QLabel("Tokens")
        title.setObjectName("pageTitle")
        outer.addWidget(title)
        self.tabs = QTabWidget()
        outer.addWidget(self.tabs, 1)
        self.tabs.addTab(self._build_compare(), "Compare tokenizers")
        self.tabs.addTab(self._build_bpe(), "BPE step by step")

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(400)
        self._debounce.timeout.connect(self.tokenize)
        self.text.textChanged.connect(self._debounce.start)
        # ctx.bus.send_to_tokens reaches receive_text through the window (desktop/app.py)
        self._update_empty_state()

    # --- building ------------------------------------------------------------------

    def _build_compare(self) -> QWidget:
        page = QWidget()
        col = QVBoxLayout(page)
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("Type or paste text to tokenize…")
        self.text.setMaximumHeight(110)
        col.addWidget(self.text)

        row = QHBoxLayout()
        self.use_wordpiece = QCheckBox("Embedder (MiniLM WordPiece)")
        self.use_wordpiece.setChecked(True)
        self.use_bpe = QCheckBox("BPE trained on this text")
        self.use_bpe.setChecked(True)
        self.model_ref = QComboBox()
        self.model_ref.setEditable(True)
        self.model_ref.setMinimumWidth(260)
        if (edit := self.model_ref.lineEdit()) is not None:  # editable: it has one
            edit.setPlaceholderText("a model: .gguf path or name (optional)")
        self._models_listed = False
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_model)
        self.go = QPushButton("Tokenize")
        self.go.setObjectName("primary")
        self.go.clicked.connect(self.tokenize)
        self.parse_special = QCheckBox("Parse special tokens")
        self.parse_special.setToolTip(
            "Read the model's special-token texts (<|im_start|>, <s> ...) as its special tokens, "
            "the way the engine reads a rendered prompt. Off: everything is plain text, as "
            "for a message you type in Chat.")
        self.parse_special.toggled.connect(self.tokenize)
        self.show_one_hot = QCheckBox("one-hot")
        self.show_one_hot.toggled.connect(self._update_one_hot)
        for w in (self.model_ref, browse, self.parse_special, self.use_wordpiece, self.use_bpe):
            row.addWidget(w)
        row.addStretch(1)
        row.addWidget(self.show_one_hot)
        row.addWidget(self.go)
        col.addLayout(row)

        self.status = QLabel("")
        self.status.setObjectName("emptyState")
        self.status.setWordWrap(True)
        col.addWidget(self.status)

        self.results_box = QWidget()
        self.results_layout = QVBoxLayout(self.results_box)
        self.results_layout.setContentsMargins(0, 0, 0, 0)
        self.results_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.results_box)
        col.addWidget(scroll, 1)

        self.one_hot_box = QWidget()
        oh = QVBoxLayout(self.one_hot_box)
        oh.setContentsMargins(0, 0, 0, 0)
        note = QLabel(ONE_HOT_NOTE)
        note.setWordWrap(True)
        oh.addWidget(note)
        self.one_hot_table = QTableWidget()
        self.one_hot_table.setMinimumHeight(160)
        oh.addWidget(self.one_hot_table)
        self.one_hot_box.setVisible(False)
        col.addWidget(self.one_hot_box)
        return page

    def _build_bpe(self) -> QWidget:
        page = QWidget()
        col = QVBoxLayout(page)
        note = QLabel(BPE_NOTE)
        note.setWordWrap(True)
        col.addWidget(note)
        self.bpe_text = QPlainTextEdit(CLASSIC_TEXT)
        self.bpe_text.setMaximumHeight(70)
        col.addWidget(self.bpe_text)
        row = QHBoxLayout()
        self.bpe_reset = QPushButton("Start over")
        self.bpe_prev = QPushButton("◀ Previous merge")
        self.bpe_next = QPushButton("Next merge ▶")
        self.bpe_next.setObjectName("primary")
        self.bpe_step_label = QLabel("")
        for w in (self.bpe_reset, self.bpe_prev, self.bpe_next):
            row.addWidget(w)
        row.addWidget(self.bpe_step_label, 1)
        col.addLayout(row)
        self.bpe_table = QTableWidget(0, 2)
        self.bpe_table.setHorizontalHeaderLabels(["Word pieces", "Count"])
        self.bpe_table.horizontalHeader().setStretchLastSection(False)
        self.bpe_table.setColumnWidth(0, 420)
        col.addWidget(self.bpe_table, 1)
        self.bpe_vocab = QLabel("")
        self.bpe_vocab.setWordWrap(True)
        col.addWidget(self.bpe_vocab)
        self.bpe_index = 0
        self.bpe_reset.clicked.connect(self.bpe_start)
        self.bpe_next.clicked.connect(lambda: self.bpe_show(self.bpe_index + 1))
        self.bpe_prev.clicked.connect(lambda: self.bpe_show(self.bpe_index - 1))
        self.bpe_start()
        return page

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        if not self._models_listed:
            self._models_listed = True
            self.list_models()

    def list_models(self) -> Worker[list[str]]:
        """Fill the model box with imported GGUF files and Ollama-store models (in a worker)."""
        return self.ctx.jobs.run(_local_models_job, self.ctx.settings, group=MODELS_GROUP,
                                 on_result=self._set_models)

    def _set_models(self, refs: list[str]) -> None:
        current = self.model_ref.currentText()
        self.model_ref.clear()
        self.model_ref.addItems(refs)
        self.model_ref.setCurrentText(current)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Pick a GGUF model", "", "GGUF models (*.gguf)")
        if path:
            self.model_ref.setCurrentText(path)
            self.tokenize()

    # --- comparing tokenizers -----------------------------------------------------------

    def receive_text(self, text: str, ref: str = "") -> None:
        """From another page: show the text and tokenize it at once. With a model ``ref`` (Chat's
        rendered prompt), that model is selected and its special tokens are parsed as the
        engine parses them, so the count equals the prompt inspector's; without one, the text
        is plain text."""
        self.tabs.setCurrentIndex(0)
        self.text.setPlainText(text)
        if ref:
            self.model_ref.setCurrentText(ref)
        self.parse_special.blockSignals(True)  # one tokenize below, not one per change
        self.parse_special.setChecked(bool(ref))
        self.parse_special.blockSignals(False)
        self._debounce.stop()
        self.tokenize()

    def selected_refs(self) -> list[str]:
        refs = []
        model = self.model_ref.currentText().strip()
        if model:
            refs.append(model)
        if self.use_wordpiece.isChecked():
            refs.append("wordpiece")
        if self.use_bpe.isChecked():
            refs.append("bpe")
        return refs

    def _cache_key(self, ref: str, text: str, special: bool) -> str:
        if ref == "bpe":
            return "bpe:" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()
        model = ref.strip().lower() not in WORDPIECE_REFS | BPE_REFS
        return f"{ref}\0special" if model and special else ref

    def tokenize(self) -> Worker[list[TokenizedText]] | None:
        """Tokenize the text with the chosen tokenizers in a worker; a newer call supersedes
        this one, so only the tokens of the latest text are ever painted."""
        self._debounce.stop()
        text = self.text.toPlainText()
        self._update_one_hot()
        refs = self.selected_refs()
        special = self.parse_special.isChecked()
        if not text or not refs:
            self.ctx.jobs.drop(TOKENIZE_GROUP)  # a running job must not paint over this
            self.show_results([])
            return None
        entries: list[TokenizerEntry] = [
            (ref, self._tokenizers.get(self._cache_key(ref, text, special))) for ref in refs]
        self.status.setText("Tokenizing…")
        self._worker = self.ctx.jobs.run(
            _tokenize_job, text, entries, self.ctx.settings, special, group=TOKENIZE_GROUP,
            on_partial=lambda item: self._remember(item, text, special),
            on_progress=lambda fraction, msg: self.status.setText(msg + "…"),
            on_result=self.show_results,
            on_error=self._failed,
            on_cancelled=self._stopped,
        )
        return self._worker

    def _remember(self, item: tuple[str, TextTokenizer], text: str, special: bool) -> None:
        ref, tok = item
        self._tokenizers[self._cache_key(ref, text, special)] = tok

    def _failed(self, exc: BaseException) -> None:
        self.status.setText(self.ctx.show_error(exc))

    def _stopped(self, partial: object) -> None:
        """A cancelled run paints nothing: some tokenizers' results alone would mislead
        (no disagreement marks), so the earlier tokens stay, and the status says so."""
        self.status.setText(STOPPED_TEXT if self.results else EMPTY_TEXT)

    def show_results(self, results: list[TokenizedText]) -> None:
        self.results = list(results)
        while self.results_layout.count() > 1:
            item = self.results_layout.takeAt(0)
            if item is not None and (widget := item.widget()) is not None:
                widget.deleteLater()
        differing = differing_cuts(self.results)
        for n, result in enumerate(self.results):
            head = QLabel(tokens_summary_html(result))
            head.setTextFormat(Qt.TextFormat.RichText)
            strip = TokenStrip()
            strip.setObjectName(f"tokenStrip{n}")
            strip.show_tokens(result, differing)
            self.results_layout.insertWidget(2 * n, head)
            self.results_layout.insertWidget(2 * n + 1, strip)
        self._update_empty_state(differing)

    def strips(self) -> list[TokenStrip]:
        return self.results_box.findChildren(TokenStrip)

    def _update_empty_state(self, differing: set[int] | None = None) -> None:
        if not self.results:
            self.status.setText(EMPTY_TEXT)
        elif len(self.results) > 1:
            n = len(differing or ())
            self.status.setText(
                "The tokenizers cut this text the same way." if n == 0 else
                f"The tokenizers disagree at {n} place{'s' if n != 1 else ''} (red bars). "
                "Hover a token for its id, bytes and whether it is special."
            )
        else:
            self.status.setText("Hover a token for its id, bytes and whether it is special.")

    # --- one-hot ---------------------------------------------------------------------

    def _update_one_hot(self) -> None:
        on = self.show_one_hot.isChecked()
        self.one_hot_box.setVisible(on)
        if not on:
            return
        words = " ".join(self.text.toPlainText().split()[:MAX_ONE_HOT_WORDS])
        oh = one_hot(words)
        table = self.one_hot_table
        table.clear()
        table.setRowCount(len(oh.tokens))
        table.setColumnCount(len(oh.vocabulary))
        table.setHorizontalHeaderLabels(oh.vocabulary)
        table.setVerticalHeaderLabels(oh.tokens)
        for r in range(len(oh.tokens)):
            for c in range(len(oh.vocabulary)):
                value = int(oh.matrix[r, c])
                cell = QTableWidgetItem(str(value))
                cell.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                if value:
                    cell.setBackground(Qt.GlobalColor.yellow)
                table.setItem(r, c, cell)
        table.resizeColumnsToContents()

    # --- BPE step by step ---------------------------------------------------------------

    def bpe_start(self) -> None:
        text = self.bpe_text.toPlainText()[:MAX_BPE_CHARS]
        self._steps = list(bpe_steps(text, max_merges=60))
        self._bpe_initial = text
        self.bpe_show(0)

    def bpe_show(self, index: int) -> None:
        from core.analysis.bpe_steps import initial_words, vocabulary_of

        index = max(0, min(index, len(self._steps)))
        self.bpe_index = index
        if index == 0:
            words = initial_words(self._bpe_initial)
            label = "Start: every word split into characters (</w> marks a word's end)."
        else:
            step = self._steps[index - 1]
            words = step.words
            label = step.describe()
        if not words:
            label = "Type a few words above, then press Start over."
        elif index == len(self._steps) and index > 0:
            label += " — no pair occurs twice any more: training is done."
        self.bpe_step_label.setText(label)
        self.bpe_prev.setEnabled(index > 0)
        self.bpe_next.setEnabled(index < len(self._steps))
        self.bpe_table.setRowCount(len(words))
        merged = self._steps[index - 1].merged if index else None
        for r, (pieces, freq) in enumerate(words):
            shown = "  ".join(f"[{p}]" if p == merged else p for p in pieces)
            self.bpe_table.setItem(r, 0, QTableWidgetItem(shown))
            self.bpe_table.setItem(r, 1, QTableWidgetItem(str(freq)))
        vocab = vocabulary_of(words)
        self.bpe_vocab.setText(f"Symbols in use ({len(vocab)}): " + "  ".join(vocab))
