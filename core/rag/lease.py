"""Who is indexing a knowledge base: a lease kept in its Chroma collection's metadata.

Two Corrals on one Chroma server must not index the same knowledge base at once. The
holder writes ``corral_lease`` (who: host, process, since) and ``corral_lease_until`` (a
wall-clock deadline) and renews them while it works; a holder that dies stops renewing, so
its lease runs out after ``LEASE_S`` seconds (at once for a dead process on the same
machine). Taking a lease writes, waits a moment and reads
back: of two machines that wrote at once, the one whose name was overwritten steps aside.
A holder that finds its claim taken over, or could not renew it before it ran out, has lost
it: ``check()`` then raises, and the index run stops before its next write (what it stored
is whole, and the next run goes on from there).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from types import TracebackType

from core.errors import KnowledgeBaseBusy
from core.rag.store import Store

log = logging.getLogger(__name__)
LEASE_S = float(os.environ.get("CORRAL_LEASE_S", "30"))
SETTLE_S = 0.2  # how long a new holder waits before reading its claim back


def holder_name() -> str:
    return f"{socket.gethostname()} (pid {os.getpid()})"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class IndexLease:
    """``with IndexLease(store, collection, kb_name):`` around an index run."""

    def __init__(self, store: Store, collection: str, kb_name: str) -> None:
        self.store = store
        self.collection = collection
        self.kb_name = kb_name
        self.me = holder_name()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = ""  #: why this holder's claim is no longer its own ('' while it holds)

    def holder(self) -> tuple[str, float] | None:
        """(who, until) of a lease that has not run out, or None. A holder on this machine
        whose process is gone (killed) holds nothing."""
        meta = self.store.collection_metadata(self.collection)
        try:
            who = json.loads(str(meta.get("corral_lease") or "null"))
            until = float(meta.get("corral_lease_until") or 0.0)
        except (TypeError, ValueError):
            return None
        if not isinstance(who, dict) or until < time.time():
            return None
        if who.get("host") == socket.gethostname() and not _alive(int(who.get("pid", 0))):
            return None
        return str(who.get("holder", "")), until

    def _write(self, until: float) -> None:
        claim = json.dumps({"holder": self.me, "host": socket.gethostname(),
                            "pid": os.getpid(), "since": time.time()}) if until else ""
        self.store.update_metadata(self.collection, {"corral_lease": claim,
                                                     "corral_lease_until": until})

    def _refuse(self, who: str, until: float) -> KnowledgeBaseBusy:
        left = max(1, round(until - time.time()))
        return KnowledgeBaseBusy(
            f"knowledge base '{self.kb_name}' is being indexed by {who}",
            hint=f"Wait until it finishes. If that Corral has stopped, its claim runs out "
                 f"in {left} s.")

    def acquire(self) -> IndexLease:
        current = self.holder()
        if current is not None and current[0] != self.me:
            raise self._refuse(*current)
        self._write(time.time() + LEASE_S)
        time.sleep(SETTLE_S)
        current = self.holder()
        if current is not None and current[0] != self.me:  # another machine wrote after us
            raise self._refuse(*current)
        self._thread = threading.Thread(target=self._renew, name="corral-lease", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(LEASE_S / 3):
            try:
                current = self.holder()
                if current is not None and current[0] != self.me:
                    self.lost = f"{current[0]} holds it now"
                    return
                self._write(time.time() + LEASE_S)
                renewed = time.monotonic()
            except Exception as exc:  # the store is away: try again until the claim runs out
                log.warning("could not renew the index lease of %s: %s", self.kb_name, exc)
                if time.monotonic() - renewed >= LEASE_S:
                    self.lost = f"it could not be renewed for {LEASE_S:g} s ({exc})"
                    return

    def check(self) -> None:
        """Raise KnowledgeBaseBusy if this holder lost its claim (before it writes more)."""
        if self.lost:
            raise KnowledgeBaseBusy(
                f"indexing '{self.kb_name}' stopped: this Corral's claim on it was lost "
                f"({self.lost})",
                hint="What was stored is kept. Index again once the other run has finished.")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            try:
                current = self.holder()
                if current is not None and current[0] == self.me:
                    self._write(0.0)
            except Exception as exc:  # a collection swapped away by a rebuild has no lease
                log.debug("no lease to drop on %s: %s", self.collection, exc)

    def __enter__(self) -> IndexLease:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
