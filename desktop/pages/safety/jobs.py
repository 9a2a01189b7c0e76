"""The Safety page's worker jobs: one test check with the chosen guard, and reading, exporting
and clearing the audit log (SQLite, which may wait on a chat turn that is writing to it), and
what a failure of the log means in words. The jobs run in the thread pool; no widgets here."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import CorralError
from desktop.jobs import Job

if TYPE_CHECKING:  # imported for real inside the jobs, so the window opens before they load
    from core.config import Settings
    from core.safety.audit import AuditEntry
    from core.safety.verdict import GuardVerdict

#: how many of the newest checks the page's table shows
AUDIT_ROWS = 1000


def try_guard_job(job: Job, settings: Settings, text: str) -> GuardVerdict:
    """Run one input check with the chosen guard (not written to the audit log)."""
    from core.safety.guard import GuardService

    s = settings.safety
    service = GuardService(s.guard_model, s.guard_version, policy=s.policy,
                           when_unavailable=s.when_unavailable, settings=settings, audit=False,
                           ollama_mode=s.ollama_mode, timeout_s=s.timeout_s)
    job.progress(None, "asking the guard model…")
    return service.check([{"role": "user", "content": text}], "user", raise_errors=True)


def read_audit_job(job: Job) -> list[AuditEntry]:
    """The newest checks of the audit log, newest first."""
    from core.safety.audit import AuditLog

    return AuditLog().entries(limit=AUDIT_ROWS)


def export_audit_job(job: Job, path: str) -> Path:
    """The whole audit log written to ``path`` (JSON for .json, CSV otherwise)."""
    from core.safety.audit import AuditLog

    return AuditLog().export(path)


def clear_audit_job(job: Job) -> None:
    from core.safety.audit import AuditLog

    AuditLog().clear()


def audit_problem(exc: BaseException) -> str | None:
    """Why the audit log failed, in words; None when ``exc`` is not a failure of the log.

    Opening, reading or writing the log fails with OSError or sqlite3.Error when the disk or
    the database does (AuditLog turns most of them into a CorralError). Anything else is a
    bug: the caller shows it as one (ctx.show_error), and the log keeps its traceback.
    """
    if isinstance(exc, CorralError):
        return exc.sentence()
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}."
    if isinstance(exc, sqlite3.Error):
        return f"the database failed: {exc}."
    return None
