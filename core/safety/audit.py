"""The safety audit log: every guard check (time, conversation, direction, verdict, categories,
guard model, why) in SQLite under the data directory, listable and exportable as CSV or JSON.

A log that cannot be written (damaged, locked by another program, or read-only) raises
AuditLogError, which says which of the three it is and what to do; the guard then counts as
unavailable (fail closed), never as checking without a record.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.config import atomic_write_text, data_dir
from core.errors import AuditLogError, CorralError
from core.safety.verdict import GuardVerdict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS guard_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    conversation_id TEXT NOT NULL DEFAULT '',
    direction TEXT NOT NULL,
    verdict TEXT NOT NULL,
    categories TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL DEFAULT '',
    probability REAL,
    guard_model TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    raw TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS guard_audit_time ON guard_audit(time);
"""
#: columns added since the first schema, added to an older log where missing
_ADDED_COLUMNS = (("reason", "TEXT NOT NULL DEFAULT ''"),)

COLUMNS = (
    "time", "conversation_id", "direction", "verdict", "categories", "action",
    "probability", "guard_model", "version", "raw", "reason",
)
#: seconds to wait for another writer before the log counts as locked
BUSY_TIMEOUT_S = 5.0
_TURN_OFF = "or turn off “Record every check” on the Safety page"


def audit_error(path: Path, exc: BaseException) -> AuditLogError:
    """The error for a failure of the log at ``path``, saying which kind and what to do."""
    detail = str(exc) or type(exc).__name__
    low = detail.lower()
    if "locked" in low or "busy" in low:
        return AuditLogError(
            f"the safety audit log {path} is locked by another program ({detail})",
            hint=f"Close the program that holds it (another Corral?) and try again, {_TURN_OFF}.")
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return AuditLogError(
            f"the safety audit log {path} is damaged ({detail})",
            hint=f"Move the file away (Corral then starts a new log), {_TURN_OFF}.")
    return AuditLogError(f"the safety audit log {path} cannot be written ({detail})",
                         hint=f"Make the file and its folder writable, {_TURN_OFF}.")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: float
    conversation_id: str
    direction: str
    verdict: str
    categories: str  #: comma-separated codes
    action: str
    probability: float | None
    guard_model: str
    version: str
    raw: str
    reason: str = ""  #: why the guard could not judge, or why the check was skipped

    def time_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_audit_path() -> Path:
    return data_dir() / "safety_audit.sqlite3"


class AuditLog:
    """Append-only record of guard checks. Thread-safe; one short connection per call."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_audit_path()
        self._lock = threading.Lock()
        with self._connect() as db:
            db.executescript(_SCHEMA)
            have = {str(r[1]) for r in db.execute("PRAGMA table_info(guard_audit)")}
            for column, definition in _ADDED_COLUMNS:
                if column not in have:
                    db.execute(f"ALTER TABLE guard_audit ADD COLUMN {column} {definition}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        except (OSError, sqlite3.Error) as exc:
            raise audit_error(self.path, exc) from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:
                yield db
        except sqlite3.Error as exc:
            raise audit_error(self.path, exc) from exc
        finally:
            db.close()

    def check_writable(self) -> None:
        """Raise AuditLogError unless a record could be written now (nothing is written)."""
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # the write lock a record takes; rolled back
            db.rollback()

    def record(self, verdict: GuardVerdict, conversation_id: str = "") -> int:
        row = (
            verdict.checked_at, conversation_id or "", verdict.direction, verdict.verdict,
            ",".join(verdict.categories), verdict.action, verdict.probability,
            verdict.guard_model, verdict.version, verdict.raw, verdict.reason,
        )
        marks = ",".join("?" * len(COLUMNS))
        with self._lock, self._connect() as db:
            cur = db.execute(f"INSERT INTO guard_audit ({', '.join(COLUMNS)}) VALUES ({marks})",
                             row)
            return int(cur.lastrowid or 0)

    def entries(
        self, *, limit: int | None = None, conversation_id: str | None = None
    ) -> list[AuditEntry]:
        """Newest first."""
        sql = f"SELECT id, {', '.join(COLUMNS)} FROM guard_audit"
        args: list[Any] = []
        if conversation_id is not None:
            sql += " WHERE conversation_id = ?"
            args.append(conversation_id)
        sql += " ORDER BY time DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock, self._connect() as db:
            rows = db.execute(sql, args).fetchall()
        return [AuditEntry(*row) for row in rows]

    def count(self) -> int:
        with self._lock, self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM guard_audit").fetchone()[0])

    def clear(self) -> None:
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM guard_audit")

    # --- export ------------------------------------------------------------------------

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["time_iso", *COLUMNS])
        for e in reversed(self.entries()):
            writer.writerow([
                _iso(e.time), e.time, e.conversation_id, e.direction, e.verdict, e.categories,
                e.action, "" if e.probability is None else e.probability, e.guard_model,
                e.version, e.raw, e.reason,
            ])
        return out.getvalue()

    def to_json(self) -> str:
        rows = []
        for e in reversed(self.entries()):
            item = e.to_dict()
            item.pop("id")
            item["time_iso"] = _iso(e.time)
            item["categories"] = [c for c in e.categories.split(",") if c]
            rows.append(item)
        return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"

    def export(self, path: str | Path) -> Path:
        """Write the whole log to ``path``: JSON for ``.json``, CSV otherwise."""
        path = Path(path)
        text = self.to_json() if path.suffix.lower() == ".json" else self.to_csv()
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise CorralError(f"cannot write {path}: {exc}") from exc
        return path


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))
