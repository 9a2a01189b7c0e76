"""The history and a second process: `corral chat` opened beside the window never marks the
window's live answer as interrupted, and the answer of a process that was killed is still
recovered, with its partial text, when a store next opens."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from core.chat.store import OTHER_HOST_STALE_S, HistoryStore, process_owner

ROOT = Path(__file__).resolve().parents[2]

#: opens the history in another process, as `corral chat` does first
OPEN = "import sys; from core.chat.store import HistoryStore; HistoryStore(sys.argv[1])"
#: streams an answer in another process, then waits there until it is killed
STREAM = """import sys, time
from core.chat.store import HistoryStore
store = HistoryStore(sys.argv[1])
conv = store.create_conversation(title="beside the window")
store.add_message(conv.id, "user", "hi")
answer = store.add_message(conv.id, "assistant", "Partial answer", streaming=1)
print(answer.id, flush=True)
time.sleep(600)
"""


def python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_second_process_leaves_the_live_answer_streaming(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = HistoryStore(path)
    conv = store.create_conversation(title="the window")
    store.add_message(conv.id, "user", "hi")
    live = store.add_message(conv.id, "assistant", "Half an ans", streaming=1)
    assert live.owner == process_owner()
    child = python(OPEN, str(path))
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    row = store.message(live.id)
    assert row.streaming and not row.interrupted and row.error == ""
    store.update_message(live.id, content="Half an answer.", streaming=0, finish_reason="stop")
    done = store.message(live.id)
    assert done.content == "Half an answer." and not done.interrupted


def test_the_answer_of_a_killed_process_is_recovered(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    child = python(STREAM, str(path))
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip().isdigit(), child.stderr.read() if child.stderr else line
        mid = int(line)
        beside = HistoryStore(path)  # the window opens while the other process streams
        assert beside.message(mid).streaming and not beside.message(mid).interrupted
    finally:
        child.kill()
        child.communicate(timeout=60)
    row = HistoryStore(path).message(mid)  # opening the store recovers it
    assert not row.streaming and row.interrupted and row.content == "Partial answer"
    assert "stopped while this answer streamed" in row.error


def test_rows_of_other_machines_and_older_versions(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = HistoryStore(path)
    conv = store.create_conversation()
    now = time.time()
    rows = {
        "elsewhere, just written": ("other-host:123:456", now),
        "elsewhere, long silent": ("other-host:123:456", now - OTHER_HOST_STALE_S - 60),
        "an older Corral": ("", now),
        "a pid that is gone": (f"{process_owner().rsplit(':', 2)[0]}:999999999:1", now),
    }
    ids = {}
    for label, (owner, updated) in rows.items():
        ids[label] = store.add_message(conv.id, "assistant", label, streaming=1).id
        with sqlite3.connect(path) as db:
            db.execute("UPDATE messages SET owner=?, updated=? WHERE id=?",
                       (owner, updated, ids[label]))
    assert store.recover() == 3
    left = {label for label, mid in ids.items() if store.message(mid).streaming}
    assert left == {"elsewhere, just written"}


def test_an_older_history_gains_the_columns_and_keeps_its_text(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    with sqlite3.connect(path) as db:  # the first schema: no warning, no owner
        db.executescript("""
            CREATE TABLE conversations (id INTEGER PRIMARY KEY AUTOINCREMENT,
                title TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '',
                format TEXT NOT NULL DEFAULT '', system TEXT NOT NULL DEFAULT '',
                params TEXT NOT NULL DEFAULT '{}', kb TEXT NOT NULL DEFAULT '',
                created REAL NOT NULL, updated REAL NOT NULL);
            CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
                conversation_id INTEGER NOT NULL, position INTEGER NOT NULL,
                role TEXT NOT NULL, content TEXT NOT NULL DEFAULT '',
                model TEXT NOT NULL DEFAULT '', format TEXT NOT NULL DEFAULT '',
                params TEXT NOT NULL DEFAULT '{}', prompt_tokens INTEGER,
                completion_tokens INTEGER, first_token_s REAL, total_s REAL,
                tokens_per_s REAL, finish_reason TEXT,
                streaming INTEGER NOT NULL DEFAULT 0, interrupted INTEGER NOT NULL DEFAULT 0,
                error TEXT NOT NULL DEFAULT '', verdict TEXT, citations TEXT,
                created REAL NOT NULL, updated REAL NOT NULL);
            INSERT INTO conversations(title, created, updated) VALUES ('old', 1, 1);
            INSERT INTO messages(conversation_id, position, role, content, streaming, created,
                updated) VALUES (1, 0, 'assistant', 'left streaming', 1, 1, 1);
        """)
    store = HistoryStore(path)
    [row] = store.messages(1)
    assert row.content == "left streaming" and row.interrupted and not row.streaming
    assert row.owner == "" and row.warning == ""
