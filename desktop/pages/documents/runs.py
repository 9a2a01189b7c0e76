"""The Documents page's one-at-a-time jobs: create a knowledge base (exporting a fast model
first), index, rebuild. Drops that arrive meanwhile wait in a queue. No widgets: it speaks
through signals, the page shows them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from desktop.context import AppContext
from desktop.jobs import Worker
from desktop.pages.documents import jobs
from desktop.pages.documents.widgets import describe_progress

if TYPE_CHECKING:
    from core.rag.chunker import ChunkParams
    from core.rag.indexing import IndexEvent

#: progress fraction meaning "leave the bar as it is, change the line only"
KEEP_BAR = -2.0

#: what a create or index job returns: {"name", "notes", "existed"} or an index run's summary
Outcome = dict[str, Any]


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
        # this runner's own group: another page's (or a test's second page's) runs never
        # supersede it, since a superseded job would never tell this runner it ended
        self.group = f"documents-index-{id(self):x}"
        self.worker: Worker[Outcome] | None = None
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

    def create(self, name: str, spec: str, mode: str, params: ChunkParams | None = None,
               paths: list[str] | None = None,
               exist_ok: bool = False) -> Worker[Outcome] | None:
        """Create a knowledge base (fast/fastest: export the model first, calibrated on
        ``paths`` for fastest), then index ``paths`` into it."""
        if self.busy:
            self.message.emit("Wait until the current job ends, or cancel it.")
            return None
        w = self.ctx.jobs.run(
            jobs.create_job, self.ctx.settings, name, spec, mode, params, exist_ok,
            list(paths or []), group=self.group,
            on_progress=self._on_progress,
            on_result=lambda result: self._on_created(result, paths),
            on_error=self._on_create_failed,
            on_cancelled=self._on_create_cancelled)
        self._begin(w, name, creating=True, quiet=False, paths=paths)
        self._on_progress(None, f"Creating the knowledge base '{name}'…")
        return w

    def index(self, name: str, paths: list[str] | None, *, only_if_changed: bool = False,
              rebuild: jobs.Rebuild | None = None) -> Worker[Outcome] | None:
        """Index ``paths`` (None: the knowledge base's sources); ``rebuild`` = (embedder,
        mode, chunk params) drops every vector first."""
        if self.busy:
            self.message.emit("Indexing is already running; wait for it or cancel it.")
            return None
        w = self.ctx.jobs.run(
            jobs.index_job, self.ctx.settings, name, paths, only_if_changed, rebuild,
            group=self.group,
            on_partial=self._on_event,
            on_progress=self._on_progress,
            on_result=self._on_finished,
            on_error=self._on_failed,
            on_cancelled=self._on_index_cancelled)
        self._begin(w, name, creating=False, quiet=only_if_changed, paths=paths)
        if not only_if_changed:
            self._on_progress(0.0, f"Indexing into '{name}'…")
        return w

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

    def _begin(self, worker: Worker[Outcome], name: str, *, creating: bool, quiet: bool,
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

    def _on_progress(self, fraction: float | None, text: str) -> None:
        if not self.quiet:
            self.line = text
            self.progress.emit(-1.0 if fraction is None else fraction, text + self.queued_text())

    def _on_event(self, ev: IndexEvent) -> None:
        self.quiet = False  # a watch check found changes: show the run
        self.line = describe_progress(ev)
        self.progress.emit(ev.fraction, self.line + self.queued_text())
        self.index_event.emit(ev)

    def _on_created(self, result: Outcome, paths: list[str] | None) -> None:
        name = result["name"]
        self._end()
        if not paths:
            self.message.emit(f"Created '{name}'. Drop files or folders here to index them.")
        self.created.emit(result)
        if paths:
            self.index(name, paths)
        else:
            self._next()

    def _on_create_failed(self, exc: BaseException) -> None:
        self._create_ended(self.ctx.show_error(exc), None)

    def _on_create_cancelled(self, partial: Outcome | None) -> None:
        name = self.kb
        if partial is None:
            self._create_ended(f"Cancelled: the knowledge base '{name}' was not created.",
                               {"cancelled": True})
        else:  # the cancel came after the knowledge base was made: it exists, empty
            self._create_ended(f"Cancelled: the knowledge base '{name}' was created, but "
                               "nothing was indexed into it.", {**partial, "cancelled": True})

    def _create_ended(self, text: str, result: Outcome | None) -> None:
        """A create job that failed (``result`` None) or was cancelled: say so, drop what
        waited for that knowledge base, then start the next drop."""
        name = self.kb
        dropped = [q for q in self.queue if q[0] == name]
        self.queue = [q for q in self.queue if q[0] != name]
        self._end()
        if dropped:
            text += " The files dropped meanwhile were not indexed."
        self.message.emit(text)
        self.created.emit({"error": text} if result is None else result)
        self._next()

    def _on_finished(self, summary: Outcome) -> None:
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

    def _on_index_cancelled(self, partial: Outcome | None) -> None:
        if partial is not None:
            # The run stopped and says how far it got (or it ended before the cancel took
            # hold): its summary tells the truth either way.
            self._on_finished(partial)
            return
        quiet = self.quiet
        self._end()
        if not quiet:
            self.message.emit("Cancelled.")
        self.finished.emit({"cancelled": True, "quiet": quiet})
        self._next()

    def _on_failed(self, exc: BaseException) -> None:
        self._end()
        text = self.ctx.show_error(exc)
        self.message.emit(text)
        self.finished.emit({"error": text, "quiet": False})
        self._next()
