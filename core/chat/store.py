"""Chat history in SQLite (WAL) under the data dir: conversations and their messages.

An answer's row is written when it starts streaming and updated as text arrives, so a killed
app loses at most what streamed since the last update. A streaming row records the process
writing it (``owner``: host, pid and the process's start time); whenever a store opens, the
streaming rows whose process is gone are marked interrupted and keep their partial text, so
``corral chat`` beside the window never touches the window's live answer.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import CorralError

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    format TEXT NOT NULL DEFAULT '',
    system TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    kb TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    format TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    first_token_s REAL,
    total_s REAL,
    tokens_per_s REAL,
    finish_reason TEXT,
    streaming INTEGER NOT NULL DEFAULT 0,
    interrupted INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    warning TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL DEFAULT '',
    unguarded TEXT NOT NULL DEFAULT '',
    verdict TEXT,
    citations TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, position);
"""
#: columns added since the first schema: (table, column, definition), added where missing
_ADDED_COLUMNS = (
    ("messages", "warning", "TEXT NOT NULL DEFAULT ''"),
    ("messages", "owner", "TEXT NOT NULL DEFAULT ''"),
    ("messages", "unguarded", "TEXT NOT NULL DEFAULT ''"),
)
#: a streaming row of another machine (a history on a shared folder) is taken as abandoned
#: when nothing was written to it for this long; this machine's rows are checked exactly
OTHER_HOST_STALE_S = 3600.0

_JSON_FIELDS = ("params", "verdict", "citations")


@dataclass
class Conversation:
    id: int
    title: str = ""
    model: str = ""
    format: str = ""
    system: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    kb: str = ""
    created: float = 0.0
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ChatMessage:
    id: int
    conversation_id: int
    position: int
    role: str
    content: str = ""
    model: str = ""
    format: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token_s: float | None = None
    total_s: float | None = None
    tokens_per_s: float | None = None
    finish_reason: str | None = None
    streaming: bool = False
    interrupted: bool = False
    error: str = ""
    warning: str = ""  #: something the user should know about a finished answer
    owner: str = ""  #: the process that streamed it: "host:pid:start" (see process_owner)
    #: the user chose to send this turn without the guard; why the guard was unavailable
    unguarded: str = ""
    verdict: dict[str, Any] | None = None
    citations: list[dict[str, Any]] | None = None
    created: float = 0.0
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The message for exports: without ``owner`` (bookkeeping that names this machine)."""
        return {k: v for k, v in self.__dict__.items() if k != "owner"}


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3 on of /proc/PID/stat (state first; start time at index 19, in clock ticks
    since boot), or None where there is no such file (gone, or not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the name in parentheses may hold spaces
    return fields if len(fields) > 19 else None


def process_owner() -> str:
    """This process as the owner of the rows it streams: ``host:pid:start``, the start time
    telling a reused pid from this process where the system says it (Linux), else empty."""
    stat = _proc_stat(os.getpid())
    return f"{socket.gethostname()}:{os.getpid()}:{stat[19] if stat else ''}"


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process there
        import ctypes

        kernel = ctypes.windll.kernel32  # type: ignore[attr-defined,unused-ignore]
        handle = kernel.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def owner_alive(owner: str, updated: float, now: float) -> bool:
    """Whether the process that owns a streaming row may still be writing it: on this host,
    the pid is alive (not a zombie) and started when the row says; on another host, the row
    was written within OTHER_HOST_STALE_S. A row without an owner (an older Corral) is not."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid, start = parts[0], int(parts[1]), parts[2]
    if host != socket.gethostname():
        return now - updated < OTHER_HOST_STALE_S
    stat = _proc_stat(pid)
    if stat is None:
        return _pid_alive(pid) if not start else False
    return stat[0] != "Z" and (not start or stat[19] == start)


def default_path() -> Path:
    from core.config import data_dir

    return data_dir() / "history.sqlite3"


class HistoryStore:
    """Thread-safe access to the history database (one connection, one lock)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._add_columns()
        except sqlite3.DatabaseError as exc:
            raise CorralError(f"cannot open the chat history {self.path}: {exc}") from exc
        self.recover()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with self._db:
                    yield self._db
            except sqlite3.DatabaseError as exc:
                raise CorralError(f"the chat history could not be written: {exc}") from exc

    def _add_columns(self) -> None:
        """Bring a history written by an older Corral up to the current schema."""
        for table, column, definition in _ADDED_COLUMNS:
            have = {str(r[1]) for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                with self._db:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def recover(self, *, older_than_s: float = 0.0) -> int:
        """Mark answers left streaming by a process that is gone as interrupted (they keep
        their text); rows a live process is still writing are left alone."""
        now = time.time()
        with self._tx() as db:
            rows = db.execute("SELECT id, owner, updated FROM messages WHERE streaming=1 "
                              "AND updated <= ?", (now - older_than_s,)).fetchall()
            gone = [(r["id"],) for r in rows if not owner_alive(r["owner"], r["updated"], now)]
            db.executemany(
                "UPDATE messages SET streaming=0, interrupted=1, "
                "error=CASE WHEN error='' THEN 'the app stopped while this answer streamed' "
                "ELSE error END WHERE id=? AND streaming=1", gone)
            return len(gone)

    # --- conversations ---------------------------------------------------------------

    def create_conversation(
        self, *, title: str = "", model: str = "", format: str = "", system: str = "",
        params: dict[str, Any] | None = None, kb: str = "",
    ) -> Conversation:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO conversations(title, model, format, system, params, kb, created, "
                "updated) VALUES (?,?,?,?,?,?,?,?)",
                (title, model, format, system, json.dumps(params or {}), kb, now, now),
            )
            cid = int(cur.lastrowid or 0)
        return self.conversation(cid)

    def conversation(self, cid: int) -> Conversation:
        with self._lock:
            row = self._db.execute("SELECT * FROM conversations WHERE id=?", (cid,)).fetchone()
        if row is None:
            raise CorralError(f"conversation {cid} does not exist (it may have been deleted)")
        return Conversation(**_decode(row))

    def conversations(self, search: str = "", limit: int = 500) -> list[Conversation]:
        """Newest first; ``search`` matches titles and message text (case-insensitive)."""
        with self._lock:
            if search:
                like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                rows = self._db.execute(
                    "SELECT * FROM conversations c WHERE c.title LIKE ? ESCAPE '\\' OR EXISTS "
                    "(SELECT 1 FROM messages m WHERE m.conversation_id=c.id AND m.content "
                    "LIKE ? ESCAPE '\\') ORDER BY updated DESC LIMIT ?",
                    (like, like, limit),
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM conversations ORDER BY updated DESC LIMIT ?", (limit,)
                ).fetchall()
        return [Conversation(**_decode(r)) for r in rows]

    def update_conversation(self, cid: int, **fields: Any) -> Conversation:
        allowed = {"title", "model", "format", "system", "params", "kb"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot update {sorted(bad)}")
        if fields:
            values = [json.dumps(v) if k == "params" else v for k, v in fields.items()]
            sets = ", ".join(f"{k}=?" for k in fields)
            with self._tx() as db:
                db.execute(
                    f"UPDATE conversations SET {sets}, updated=? WHERE id=?",
                    (*values, time.time(), cid),
                )
        return self.conversation(cid)

    def rename(self, cid: int, title: str) -> Conversation:
        return self.update_conversation(cid, title=title.strip())

    def delete_conversation(self, cid: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE conversation_id=?", (cid,))
            db.execute("DELETE FROM conversations WHERE id=?", (cid,))

    # --- messages --------------------------------------------------------------------

    def messages(self, cid: int) -> list[ChatMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM messages WHERE conversation_id=? ORDER BY position, id", (cid,)
            ).fetchall()
        return [ChatMessage(**_decode(r)) for r in rows]

    def message(self, mid: int) -> ChatMessage:
        with self._lock:
            row = self._db.execute("SELECT * FROM messages WHERE id=?", (mid,)).fetchone()
        if row is None:
            raise CorralError(f"message {mid} does not exist")
        return ChatMessage(**_decode(row))

    def add_message(self, cid: int, role: str, content: str = "", **fields: Any) -> ChatMessage:
        now = time.time()
        cols = {"role": role, "content": content, **fields}
        if cols.get("streaming"):
            cols.setdefault("owner", process_owner())
        for key in _JSON_FIELDS:
            if key in cols and cols[key] is not None:
                cols[key] = json.dumps(cols[key])
        with self._tx() as db:
            row = db.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM messages WHERE conversation_id=?",
                (cid,),
            ).fetchone()
            names = ", ".join(cols)
            marks = ", ".join("?" for _ in cols)
            cur = db.execute(
                f"INSERT INTO messages(conversation_id, position, {names}, created, updated) "
                f"VALUES (?, ?, {marks}, ?, ?)",
                (cid, int(row[0]), *cols.values(), now, now),
            )
            db.execute("UPDATE conversations SET updated=? WHERE id=?", (now, cid))
            mid = int(cur.lastrowid or 0)
        return self.message(mid)

    def update_message(self, mid: int, **fields: Any) -> None:
        if not fields:
            return
        for key in _JSON_FIELDS:
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        for key in ("streaming", "interrupted"):
            if key in fields:
                fields[key] = int(bool(fields[key]))
        sets = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE messages SET {sets}, updated=? WHERE id=?",
                       (*fields.values(), time.time(), mid))

    def delete_messages_from(self, cid: int, position: int) -> None:
        """Delete the message at ``position`` and everything after it (edit, regenerate)."""
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE conversation_id=? AND position>=?",
                       (cid, position))


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in _JSON_FIELDS:
        if key in out and out[key] is not None:
            try:
                out[key] = json.loads(out[key])
            except ValueError:
                out[key] = None
    for key in ("streaming", "interrupted"):
        if key in out:
            out[key] = bool(out[key])
    return out
