"""The vector store: Chroma, embedded (PersistentClient, one owner process) or a server.

Every Chroma call runs on one storage thread per store (DESIGN.md rule 5); callers get
results back through futures. An embedded store holds a lock file, so a second Corral on
the same data gets StoreLocked instead of silently damaging the index. We never let Chroma
embed anything: vectors always come from our embedder.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from core.config import Settings, data_dir
from core.errors import BackendUnavailable, CorralError, FeatureUnavailable, StoreError, StoreLocked

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_NAME = "corral.lock"


class _StoreLock:
    """An exclusive advisory lock on ``<dir>/corral.lock``, held while the store is open."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fh: Any = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open on purpose
        try:
            if os.name == "nt":  # pragma: no cover - Windows
                import msvcrt

                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            else:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            fh.close()
            raise StoreLocked(
                f"the knowledge bases in {self.path.parent} are open in another Corral "
                f"process (pid {owner})"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()  # closing the descriptor drops the flock
            finally:
                self._fh = None


def _chroma_errors() -> tuple[type[Exception], ...]:
    """What Chroma raises for a store that is away or lacks what was asked (not for bugs)."""
    from chromadb.errors import ChromaError

    errors: tuple[type[Exception], ...] = (ChromaError, ValueError, OSError)
    try:
        import httpx
    except ImportError:  # the embedded client only
        return errors
    return (*errors, httpx.HTTPError)


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the server could not be reached or dropped the connection."""
    try:
        import httpx
    except ImportError:  # the embedded client only
        return False
    return isinstance(exc, httpx.TransportError)


class Store:
    """One Chroma client and the thread that owns it."""

    def __init__(self, *, mode: str = "embedded", path: Path | None = None,
                 host: str = "127.0.0.1", port: int = 8000) -> None:
        if mode not in ("embedded", "server"):
            raise CorralError(f"unknown store mode {mode!r}; use 'embedded' or 'server'")
        self.mode = mode
        self.path = path or data_dir() / "chroma"
        self.host = host
        self.port = port
        self._lock = _StoreLock(self.path) if mode == "embedded" else None
        self._queue: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._closed = False
        self._max_batch: int | None = None
        self._handles: dict[str, Any] = {}  # collection name -> handle, storage thread only

    @property
    def where(self) -> str:
        return str(self.path) if self.mode == "embedded" else f"http://{self.host}:{self.port}"

    # --- the owner thread ----------------------------------------------------------------

    def open(self) -> Store:
        if self._thread is not None:
            return self
        if self._lock is not None:
            self._lock.acquire()
        self._thread = threading.Thread(target=self._serve, name="corral-chroma", daemon=True)
        self._thread.start()
        try:
            self.call(self._connect)
        except BaseException:
            self.close()
            raise
        return self

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(self._mapped(exc))

    def _mapped(self, exc: BaseException) -> BaseException:
        """A server that stops answering mid-run is BackendUnavailable, not an httpx error."""
        if self.mode != "server" or not _unreachable(exc):
            return exc
        err = BackendUnavailable(
            f"the Chroma server at {self.where} stopped answering ({type(exc).__name__})",
            hint="Start it again, then retry: what was stored before is kept.")
        err.__cause__ = exc
        return err

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the storage thread; the future carries its result."""
        if self._closed:
            raise StoreError("the document store is closed")
        if self._thread is None:
            self.open()
        fut: Future[T] = Future()
        self._queue.put((fn, fut))
        return fut

    def call(self, fn: Callable[[], T]) -> T:
        return self.submit(fn).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        self._client = None
        self._handles.clear()
        if self._lock is not None:
            self._lock.release()

    # --- runs on the owner thread ---------------------------------------------------------------

    def _connect(self) -> None:
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        try:
            import chromadb
            from chromadb.config import Settings as ChromaSettings
        except ImportError as exc:
            raise FeatureUnavailable("chromadb is not installed",
                                     hint="Install Corral's dependencies.") from exc
        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        if self.mode == "embedded":
            self.path.mkdir(parents=True, exist_ok=True)
            self._client = chromadb.PersistentClient(path=str(self.path), settings=chroma_settings)
        else:
            try:
                self._client = chromadb.HttpClient(
                    host=self.host, port=self.port, settings=chroma_settings
                )
                self._client.heartbeat()
            except _chroma_errors() as exc:  # "Could not connect ..." is a ValueError
                raise BackendUnavailable(
                    f"the Chroma server at {self.where} does not answer ({type(exc).__name__})"
                ) from exc

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StoreError("the document store is not open")
        return self._client

    def _collection(self, name: str, *, fresh: bool = False) -> Any:
        """The collection handle (cached: a lookup costs milliseconds on every search)."""
        col = None if fresh else self._handles.get(name)
        if col is None:
            try:
                col = self.client.get_collection(name=name, embedding_function=None)
            except _chroma_errors() as exc:  # NotFoundError (older Chroma: ValueError)
                self._handles.pop(name, None)
                if _unreachable(exc):
                    raise
                raise StoreError(f"no collection {name!r} in the store at {self.where}") from exc
            self._handles[name] = col
        return col

    def _on(self, name: str, op: Callable[[Any], T]) -> T:
        """Run ``op(collection)``; a handle made stale elsewhere (server) is looked up again."""
        try:
            return op(self._collection(name))
        except StoreError:
            raise
        except _chroma_errors() as exc:
            text = str(exc).lower()
            if "does not exist" not in text and "not found" not in text:
                raise
            return op(self._collection(name, fresh=True))

    # --- the API (thread-safe: everything goes through the owner) -------------------------

    def max_batch(self) -> int:
        if self._max_batch is None:
            try:
                self._max_batch = int(self.call(lambda: self.client.get_max_batch_size()))
            except _chroma_errors():  # a server too old to say: Chroma's own default
                self._max_batch = 5000
        return self._max_batch

    def list_collections(self) -> list[tuple[str, dict[str, Any]]]:
        def run() -> list[tuple[str, dict[str, Any]]]:
            out = []
            for col in self.client.list_collections():
                out.append((col.name, dict(col.metadata or {})))
            return out

        return self.call(run)

    def create_collection(self, name: str, metadata: dict[str, Any]) -> None:
        meta = {"hnsw:space": "cosine", **metadata}
        self.call(lambda: self.client.create_collection(
            name=name, metadata=meta, embedding_function=None
        ))

    def collection_metadata(self, name: str) -> dict[str, Any]:
        return self.call(lambda: dict(self._collection(name, fresh=True).metadata or {}))

    def update_metadata(self, name: str, changes: dict[str, Any]) -> None:
        def run() -> None:
            col = self._collection(name, fresh=True)
            meta = {k: v for k, v in dict(col.metadata or {}).items() if not k.startswith("hnsw:")}
            meta.update(changes)
            col.modify(metadata=meta)

        self.call(run)

    def delete_collection(self, name: str) -> None:
        def run() -> None:
            self._handles.pop(name, None)
            try:
                self.client.delete_collection(name=name)
            except _chroma_errors() as exc:
                if "does not exist" not in str(exc).lower():
                    raise

        self.call(run)

    def upsert(self, name: str, ids: Sequence[str], embeddings: np.ndarray,
               documents: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> Future[None]:
        """Queue an upsert (split to the store's max batch size); returns when queued."""
        size = self.max_batch()

        def op(col: Any) -> None:
            for start in range(0, len(ids), size):
                end = start + size
                col.upsert(
                    ids=list(ids[start:end]), embeddings=embeddings[start:end],
                    documents=list(documents[start:end]), metadatas=list(metadatas[start:end]),
                )

        return self.submit(lambda: self._on(name, op))

    def delete(self, name: str, *, ids: Sequence[str] | None = None,
               where: dict[str, Any] | None = None) -> None:
        size = self.max_batch()

        def op(col: Any) -> None:
            if ids is not None:
                for start in range(0, len(ids), size):
                    col.delete(ids=list(ids[start : start + size]))
            elif where is not None:
                col.delete(where=where)

        self.call(lambda: self._on(name, op))

    def count(self, name: str) -> int:
        return int(self.call(lambda: self._on(name, lambda col: col.count())))

    def query(self, name: str, vector: np.ndarray, n: int,
              include_embeddings: bool = False) -> dict[str, Any]:
        return self.query_async(name, vector, n, include_embeddings).result()

    def query_async(self, name: str, vector: np.ndarray, n: int,
                    include_embeddings: bool = False) -> Future[dict[str, Any]]:
        """Nearest ``n`` chunks (cosine distance), answered on the storage thread."""
        include = ["documents", "metadatas", "distances"]
        if include_embeddings:
            include.append("embeddings")

        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)

        def op(col: Any) -> dict[str, Any]:
            # (an empty or small collection just returns fewer results)
            return dict(col.query(query_embeddings=query, n_results=n, include=include))

        return self.submit(lambda: self._on(name, op))

    def query_then_get(self, name: str, vector: np.ndarray, n: int,
                       pick: Callable[[dict[str, Any]], Sequence[str]]
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One trip to the storage thread (each trip costs a thread wake-up): the ids and
        distances of the nearest ``n`` chunks, then the texts, metadatas and vectors of the
        chunks that ``pick`` chooses, given that answer (hybrid search fuses ranks there)."""
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)

        def op(col: Any) -> tuple[dict[str, Any], dict[str, Any]]:
            near = dict(col.query(query_embeddings=query, n_results=n, include=["distances"]))
            ids = list(pick(near))
            got: dict[str, Any] = {"ids": [], "documents": [], "metadatas": [], "embeddings": []}
            if ids:
                got = dict(col.get(ids=ids, include=["documents", "metadatas", "embeddings"]))
            return near, got

        return self.call(lambda: self._on(name, op))

    def get(self, name: str, *, ids: Sequence[str] | None = None,
            where: dict[str, Any] | None = None, limit: int | None = None, offset: int | None = None,
            include: Sequence[str] = ("documents", "metadatas")) -> dict[str, Any]:
        def op(col: Any) -> dict[str, Any]:
            return dict(col.get(
                ids=list(ids) if ids is not None else None, where=where, limit=limit,
                offset=offset, include=list(include),
            ))

        return self.call(lambda: self._on(name, op))


# --- one store per place --------------------------------------------------------------------

_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def open_store(settings: Settings) -> Store:
    """The process-wide store named by the settings (embedded under CORRAL_HOME, or a server)."""
    cfg = settings.store
    if cfg.mode == "server":
        store = Store(mode="server", host=cfg.host, port=cfg.port)
    else:
        store = Store(mode="embedded", path=data_dir() / "chroma")
    key = f"{store.mode}:{store.where}"
    with _stores_lock:
        existing = _stores.get(key)
        if existing is not None and not existing._closed:
            return existing
        store.open()
        _stores[key] = store
        return store


def close_stores() -> None:
    """Close every open store (releases the lock files)."""
    with _stores_lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        store.close()


atexit.register(close_stores)
