"""What the Evaluate and Tune tabs of Documents share: one long run at a time on the selected
knowledge base, with a progress bar, a status line and Cancel; the run stored with the
knowledge base shown when it is selected; work for a knowledge base no longer shown dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QWidget

from desktop.context import AppContext, describe_error
from desktop.jobs import Worker


class KbRunTab(QWidget):
    """Subclasses set ``kind`` (names the job groups), ``last_job`` (a job ``(settings, name)
    -> (name, stored result or None)``) and ``empty_text``, build their widgets around
    ``progress``, ``status`` and ``cancel_button``, and give ``show_result`` and
    ``_update_buttons``."""

    stopped = Signal()  #: a run was cancelled
    last_shown = Signal(object)  #: the stored result of the knowledge base shown, or None

    kind = ""
    empty_text = ""
    last_job: Callable[..., tuple[str, Any]]

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.kb: str | None = None
        self.result: Any = None
        tag = f"{id(self):x}"
        self.run_group = f"documents-{self.kind}-{tag}"
        self.load_group = f"documents-{self.kind}-last-{tag}"
        self._busy = False
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)

    # --- the knowledge base shown ---------------------------------------------------------

    def set_kb(self, name: str | None) -> None:
        """Show ``name``'s last stored run (a run for another knowledge base is dropped)."""
        if name == self.kb:
            return
        self.ctx.jobs.drop(self.run_group)
        self._running(False)
        self.kb = name
        self.show_result(None)
        self.status.setText("")
        self.load_last()

    def load_last(self) -> None:
        if self.kb is not None:
            self.ctx.jobs.run(type(self).last_job, self.ctx.settings, self.kb,
                              group=self.load_group, on_result=self._show_last, quiet=True)

    def _show_last(self, got: tuple[str, Any]) -> None:
        name, result = got
        if name != self.kb:
            return
        self.show_result(result)
        if result is None:
            self.status.setText(self.empty_text)
        self.last_shown.emit(result)

    # --- running ------------------------------------------------------------------------------

    def start(self, fn: Callable[..., Any], *args: Any, on_result: Callable[[Any], None],
              cancelled: str) -> Worker[Any]:
        """Run ``fn(job, *args)`` as this tab's one run; ``cancelled`` is what the status line
        then says."""
        self._running(True)
        self.progress.setValue(0)
        self.status.setText("Starting…")

        def stopped(_partial: object) -> None:
            self.status.setText(cancelled)
            self.stopped.emit()

        return self.ctx.jobs.run(fn, *args, group=self.run_group, on_progress=self._on_progress,
                                 on_result=on_result, on_error=self._on_error,
                                 on_cancelled=stopped, on_done=lambda: self._running(False))

    def cancel(self) -> None:
        self.ctx.jobs.cancel(self.run_group)

    @property
    def busy(self) -> bool:
        return self._busy

    def _running(self, on: bool) -> None:
        self.progress.setVisible(on)
        self._busy = on
        self._update_buttons()

    def _on_progress(self, fraction: float | None, text: str) -> None:
        if fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(fraction * 1000))
        if text:
            self.status.setText(text + "…")

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(describe_error(exc))

    def shutdown(self) -> None:
        """The page goes: its run is cancelled, and nothing paints into it any more."""
        self.ctx.jobs.drop(self.run_group)
        self.ctx.jobs.drop(self.load_group)

    # --- for the subclass -------------------------------------------------------------------

    def show_result(self, result: Any) -> None:
        raise NotImplementedError

    def _update_buttons(self) -> None:
        raise NotImplementedError
