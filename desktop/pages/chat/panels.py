"""Side pieces of the Chat page: the generation parameters form, the context-window meter and
the prompt inspector, and what keeps those two up to date."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import NamedTuple

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.chat.backends import BackendInfo, PreparedPrompt
from core.chat.params import GenerationParams
from core.chat.session import ChatSession
from desktop.context import AppContext
from desktop.jobs import Worker
from desktop.pages.chat.jobs import CHARS_PER_TOKEN, PromptViews, prompt_views_job


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


def trained_context(info: BackendInfo) -> int | None:
    """The context length the model was trained on: from the GGUF's metadata (llama.cpp gives
    its values as text), or what Ollama reports for the model."""
    if info.kind == "ollama":
        return info.context_length
    meta = info.details.get("metadata") or {}
    value = str(meta.get(f"{meta.get('general.architecture', '')}.context_length", ""))
    return int(value) if value.isdigit() and int(value) > 0 else None


class ContextMeter(QProgressBar):
    """Tokens used by the system prompt, the history and the answer so far, of the context the
    model really gets; "≈" marks estimates, and the tooltip says why and where the length
    comes from."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextVisible(True)
        self.setMaximumHeight(18)
        self.system = self.history = self.answer = 0
        self.length: int | None = None  #: the context the model really gets
        self.requested = 0  #: what the user picked (0: the model's default)
        self.trained: int | None = None  #: what the model was trained on
        self.exact = True  #: counted by the model's own tokenizer
        self.backend_exact = True  #: the backend says its counts are exact
        self.show_counts(0, 0, None)

    def set_model(self, info: BackendInfo | None) -> None:
        """The model whose context this is (None while none is open)."""
        self.trained = trained_context(info) if info is not None else None
        self.backend_exact = info.exact_counts if info is not None else True
        self._update()

    def show_counts(self, system: int, history: int, length: int | None, *,
                    requested: int = 0, exact: bool = True) -> None:
        self.system, self.history, self.length = system, history, length
        self.requested, self.exact = requested, exact
        self.answer = 0
        self._update()

    def set_answer(self, tokens: int) -> None:
        self.answer = tokens
        self._update()

    def set_prompt(self, tokens: int) -> None:
        """The prompt a turn sends, counted by the model's own tokenizer: all of it but the
        system part is history (so an answer being regenerated no longer counts)."""
        self.history = max(0, tokens - self.system)
        self._update()

    @property
    def capped(self) -> bool:
        """The user picked more than the model gets (e.g. past its trained length)."""
        return bool(self.requested and self.length and self.length < self.requested)

    def _update(self) -> None:
        used = self.system + self.history + self.answer
        approx = "" if self.exact and self.backend_exact else "≈"
        of = f" / {self.length:,}" if self.length else ""
        trained = ""
        if self.capped:
            trained = (" (capped at the trained length)" if self.length == self.trained
                       else f" (capped; you picked {self.requested:,})")
        elif self.trained and self.length and self.trained != self.length:
            trained = f" (of {self.trained:,} trained)"
        self.setFormat(f"context: system {approx}{self.system:,} + history "
                       f"{approx}{self.history:,} + answer {self.answer:,} = "
                       f"{approx}{used:,}{of} tokens{trained}")
        self.setToolTip(self._explain(approx))
        self.setRange(0, max(self.length or used or 1, 1))
        self.setValue(min(used, self.maximum()))
        full = bool(self.length) and used > 0.9 * (self.length or 0)
        self.setStyleSheet("QProgressBar::chunk { background: %s; }"
                           % ("#ef9a9a" if full else "#b3e5fc"))  # light: the text stays legible

    def _explain(self, approx: str) -> str:
        lines = ["system: the system prompt and the prompt format's own tokens; history: the "
                 "earlier turns and the message being typed; answer: the answer so far."]
        if self.length:
            where = (f"you picked {self.requested:,}" if self.requested
                     else "the model's default; change it under Parameters → Context length")
            if self.capped and self.length == self.trained:
                where = (f"you picked {self.requested:,}, but the model was trained on "
                         f"{self.length:,}, and longer contexts only produce garbage")
            elif self.capped:
                where = f"you picked {self.requested:,}; the backend gives no more"
            lines.append(f"The model gets a context of {self.length:,} tokens ({where}).")
        if self.trained and not self.capped:
            lines.append(f"It was trained on {self.trained:,} tokens.")
        if approx and not self.exact:
            lines.append("≈: estimates. The model's own tokenizer is not at hand, so tokens are "
                         f"counted as about {CHARS_PER_TOKEN} characters each.")
        elif approx:
            lines.append("≈: estimates. Corral cannot count with this model's own vocabulary "
                         "here (its file is not in the Ollama store on this machine, or Ollama "
                         "applies its own template), so the numbers are estimates with a margin.")
        return "\n".join(lines)


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


class Draft(NamedTuple):
    """What the meter and the inspector count: the message being typed in its conversation."""

    session: ChatSession
    text: str
    upto: int | None  #: the position of the message being edited (what follows is replaced)
    kind: str  #: the backend kind


class PromptWatch(QObject):
    """Keeps the context meter and the prompt inspector up to date: the prompt is counted (and
    built, while the inspector shows) in a worker, at once or 300 ms after the last keystroke.
    A newer count supersedes an older one, whose result is never painted."""

    def __init__(self, ctx: AppContext, meter: ContextMeter, inspector: PromptInspector,
                 draft: Callable[[], Draft | None], parent: QObject | None = None) -> None:
        """``draft()`` gives what to count; None when there is nothing to count now."""
        super().__init__(parent)
        self.ctx, self.meter, self.inspector, self.draft = ctx, meter, inspector, draft
        self.worker: Worker[PromptViews] | None = None  #: the latest count
        self._later = QTimer(self)
        self._later.setSingleShot(True)
        self._later.setInterval(300)
        self._later.timeout.connect(self.refresh)

    def show_inspector(self, on: bool) -> None:
        self.inspector.setVisible(on)
        if on:
            self.refresh()

    def refresh_soon(self) -> None:
        """Refresh 300 ms after the last call (typing)."""
        self._later.start()

    def refresh(self) -> None:
        what = self.draft()
        if what is None:
            return
        # quiet: a count refreshed while typing is not work the user started
        self.worker = self.ctx.jobs.run(
            prompt_views_job, what.session, what.text, what.upto, what.kind,
            self.inspector.isVisible(), group="chat-inspect", quiet=True,
            on_result=self._ready, on_error=self._failed)

    def _failed(self, exc: BaseException) -> None:
        """The draft could not be counted (e.g. the model has no template of its own)."""
        self.inspector.show_problem(self.ctx.show_error(exc))

    def _ready(self, views: PromptViews) -> None:
        self.meter.show_counts(views.system_tokens, views.history_tokens, views.length,
                               requested=views.requested, exact=views.exact)
        if views.prepared is not None:
            self.inspector.show_prompt(views.prepared, views.kind)
        elif views.problem:
            self.inspector.show_problem(views.problem)
