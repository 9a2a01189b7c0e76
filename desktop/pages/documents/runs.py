"""The Documents page's one-at-a-time jobs: create a knowledge base (exporting a fast model
first), index, rebuild. Drops that arrive meanwhile wait in a queue. No widgets: it speaks
through signals, the page shows them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from desktop.pages.documents.page import jobs
from desktop.context import AppContext, describe_error
from desktop.pages.documents.widgets import describe_progress
from desktop.jobs import Worker

#: progress fraction meaning "leave the bar as it is, change the line only"
KEEP_BAR = -2.0


class IndexRunner(QObject):
    progress = Signal(float, str)  # fraction (-1: not known yet; KEEP_BAR), the line to show
    index_event = Signal(object)  # an IndexEvent of the running index job
    message = Signal(str)  # a sentence that ends a job (done, cancelled, failed)
    created = Signal(object)  # {"name", "notes", "existed"}, or {"error"} / {"cancelled"}
    finished = Signal(object)  # an index run's summary, or {"error"} / {"cancelled"}
    busy_changed = Signal(bool)

    def __init__(self, ctx: AppContext, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.worker: Worker | None = None
        self.kb = ""  # the knowledge base being created or indexed
        self.creating = False
        self.quiet = False  # a watch check that has found nothing to do (yet)
        self.queue: list[tuple[str, list[str]]] = []
        self.line = ""  # the running job's last progress line
        self.paths: list[str] = []  # what the running job indexes ([]: the sources)

    @property
    def busy(self) -> bool:
        return self.worker is not None

    # --- starting jobs ------------------------------------------------------------------------

    def create(self, name: str, spec: str, mode: str, params: Any = None,
               paths: list[str] | None = None, exist_ok: bool = False) -> Worker | None:
        """Create a knowledge base (fast/fastest: export the model first, calibrated on
        ``paths`` for fastest), then index ``paths`` into it."""
        if self.busy:
            self.message.emit("Wait until the current job ends, or cancel it.")
            return None
        w = Worker(jobs.create_job, self.ctx.settings, name, spec, mode, params, exist_ok,
                   list(paths or []))
        w.signals.progress.connect(self._on_progress)
        w.signals.finished.connect(lambda result: self._on_created(result, paths))
        w.signals.failed.connect(self._on_create_failed)
        self._begin(w, name, creating=True, quiet=False, paths=paths)
        self._on_progress(-1.0, f"Creating the knowledge base '{name}'…")
        return self.ctx.jobs.start(w, group="documents-index")

    def index(self, name: str, paths: list[str] | None, *, only_if_changed: bool = False,
              rebuild: tuple[str, str, Any] | None = None) -> Worker | None:
        """Index ``paths`` (None: the knowledge base's sources); ``rebuild`` = (embedder,
        mode, chunk params) drops every vector first."""
        if self.busy:
            self.message.emit("Indexing is already running; wait for it or cancel it.")
            return None
        w = Worker(jobs.index_job, self.ctx.settings, name, paths, only_if_changed, rebuild)
        w.signals.partial.connect(self._on_event)
        w.signals.progress.connect(self._on_progress)
        w.signals.finished.connect(self._on_finished)
        w.signals.failed.connect(self._on_failed)
        self._begin(w, name, creating=False, quiet=only_if_changed, paths=paths)
        if not only_if_changed:
            self._on_progress(0.0, f"Indexing into '{name}'…")
        return self.ctx.jobs.start(w, group="documents-index")

    def enqueue(self, name: str, paths: list[str]) -> str:
        """Keep a drop for after the running job; returns the sentence that says so."""
        if self.quiet:  # a watch check: the user's drop goes first
            self.cancel()
        self.queue.append((name, paths))
        what = Path(paths[0]).name if len(paths) == 1 else f"{len(paths)} items"
        if not self.quiet:
            self.progress.emit(KEEP_BAR, self.line + self.queued_text())
        return f"Queued: {what} will be indexed into '{name}' when this run ends."

    def cancel(self) -> None:
        if self.worker is None:
            return
        self.worker.cancel()
        if self.quiet:
            return
        dropped = len(self.queue)
        self.queue.clear()
        text = "Cancelling… (finished files are kept)"
        if dropped:
            text += f"; {dropped} queued drop{'s' if dropped > 1 else ''} will not be indexed"
        self.line = text
        self.progress.emit(KEEP_BAR, text)

    def queued_text(self) -> str:
        n = len(self.queue)
        if not n:
            return ""
        return f" — then {n} queued drop{'s' if n > 1 else ''} (into '{self.queue[0][0]}')"

    def _begin(self, worker: Worker, name: str, *, creating: bool, quiet: bool,
               paths: list[str] | None) -> None:
        self.worker, self.kb, self.creating, self.quiet = worker, name, creating, quiet
        self.line, self.paths = "", list(paths or [])
        self.busy_changed.emit(True)

    def _end(self) -> None:
        self.worker, self.kb, self.creating, self.quiet = None, "", False, False
        self.busy_changed.emit(False)

    def _next(self) -> None:
        while self.queue and not self.busy:
            name, paths = self.queue.pop(0)
            for other in [q for q in self.queue if q[0] == name]:  # one run per knowledge base
                paths += [p for p in other[1] if p not in paths]
                self.queue.remove(other)
            self.index(name, paths)

    # --- what the jobs say --------------------------------------------------------------------

    def _on_progress(self, fraction: float, text: str) -> None:
        if not self.quiet:
            self.line = text
            self.progress.emit(fraction, text + self.queued_text())

    def _on_event(self, ev: Any) -> None:
        self.quiet = False  # a watch check found changes: show the run
        self.line = describe_progress(ev)
        self.progress.emit(ev.fraction, self.line + self.queued_text())
        self.index_event.emit(ev)

    def _on_created(self, result: dict[str, Any], paths: list[str] | None) -> None:
        name = result["name"]
        self._end()
        if not paths:
            self.message.emit(f"Created '{name}'. Drop files or folders here to index them.")
        self.created.emit(result)
        if paths:
            self.index(name, paths)
        else:
            self._next()

    def _on_create_failed(self, exc: object) -> None:
        from core.errors import Cancelled

        name = self.kb
        dropped = [q for q in self.queue if q[0] == name]
        self.queue = [q for q in self.queue if q[0] != name]
        self._end()
        if isinstance(exc, Cancelled):
            text = f"Cancelled: the knowledge base '{name}' was not created."
        else:
            text = self.ctx.show_error(exc)  # type: ignore[arg-type]
        if dropped:
            text += " The files dropped meanwhile were not indexed."
        self.message.emit(text)
        self.created.emit({"cancelled": True} if isinstance(exc, Cancelled) else {"error": text})
        self._next()

    def _on_finished(self, summary: dict[str, Any]) -> None:
        quiet = self.quiet
        self._end()
        summary["quiet"] = quiet
        if not quiet:
            if summary.get("cancelled"):
                text = "Cancelled. Finished files are kept; drop the same files again to resume."
            else:
                text = (f"Done: {summary['indexed']} indexed, {summary['unchanged']} unchanged, "
                        f"{summary['skipped']} skipped, {summary['removed']} removed.")
                if summary.get("rebuilt"):
                    text = f"Rebuilt '{summary['kb']}'. {text}"
            self.message.emit(text)
        self.finished.emit(summary)
        self._next()

    def _on_failed(self, exc: object) -> None:
        from core.errors import Cancelled

        quiet = self.quiet
        self._end()
        if isinstance(exc, Cancelled):
            if not quiet:
                self.message.emit("Cancelled.")
            self.finished.emit({"cancelled": True, "quiet": quiet})
        else:
            text = self.ctx.show_error(exc)  # type: ignore[arg-type]
            self.message.emit(text)
            self.finished.emit({"error": describe_error(exc), "quiet": False})  # type: ignore[arg-type]
        self._next()
