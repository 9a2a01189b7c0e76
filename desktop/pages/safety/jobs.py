"""The Safety page's worker jobs: one test check with the chosen guard, and reading, exporting
and clearing the audit log (SQLite, which may wait on a chat turn that is writing to it). They
run in the thread pool; no widgets here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
                           fail_closed=s.fail_closed, settings=settings, audit=False,
                           ollama_mode=s.ollama_mode)
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
