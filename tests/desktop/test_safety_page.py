"""The Safety page: guard model and version, per-category policy saved to settings, the audit
log table and its export, and a test check through the loopback Ollama server."""

from __future__ import annotations

import csv
import io

import pytest

from core.config import Settings
from core.safety.audit import AuditLog, default_audit_path
from core.safety.verdict import GuardVerdict, holds_answers

WAIT = 15000


@pytest.fixture
def page(ctx, qtbot):
    from desktop.pages.safety.page import SafetyPage

    widget = SafetyPage(ctx)
    qtbot.addWidget(widget)
    widget.resize(1100, 800)
    return widget


def two_checks() -> None:
    audit = AuditLog()
    audit.record(GuardVerdict.from_answer("unsafe\nS1,S10", version="llama-guard-3",
                                          guard_model="ollama:llama-guard3", direction="input"),
                 "42")
    audit.record(GuardVerdict.from_answer("safe", version="llama-guard-3",
                                          guard_model="ollama:llama-guard3", direction="output"),
                 "42")


def test_empty_state_says_what_to_do(page, qtbot):
    assert "No guard model chosen" in page.notice.text()
    assert page.audit_stack.currentWidget() is page.audit_empty
    assert not page.export_button.isEnabled()
    with qtbot.waitSignal(page.audit_shown, timeout=WAIT):
        page.refresh_audit()
    assert page.audit_stack.currentWidget() is page.audit_empty
    assert page.audit_empty.text().startswith("No checks recorded yet.")
    assert not page.export_button.isEnabled() and not page.clear_button.isEnabled()


def test_choosing_a_model_picks_its_version_and_policy_table(page, qtbot):
    page.model.setCurrentText("ollama:llama-guard3:1b")
    page._model_changed()
    assert page.version_key == "llama-guard-3-1b"
    assert page.policy_table.rowCount() == 13  # the 1B model has no S14
    names = [page.policy_table.item(r, 1).text() for r in range(13)]
    assert "Suicide & Self-Harm" in names  # model-card names, not prompt names
    page.enabled.setChecked(True)
    page.set_action("S1", "warn")
    saved = Settings.load().safety
    assert saved.guard_model == "ollama:llama-guard3:1b" and saved.enabled
    assert saved.guard_version == "llama-guard-3-1b"
    assert saved.policy["llama-guard-3-1b:S1"] == "warn"
    assert saved.policy["llama-guard-3-1b:S2"] == "block"
    assert not page.notice.isVisible()


def test_what_happens_when_the_guard_is_unavailable_and_how_answers_show(page, ctx):
    # the defaults: block, answers held while a category blocks, two minutes per check
    assert page.when_unavailable.currentText() == "Block the message (fail closed)"
    assert page.answers.currentData() == "auto" and page.timeout.value() == 120
    page.when_unavailable.setCurrentIndex(page.when_unavailable.findData("warn"))
    page.answers.setCurrentIndex(page.answers.findData("stream"))
    page.timeout.setValue(20)
    saved = Settings.load().safety
    assert (saved.when_unavailable, saved.answers, saved.timeout_s) == ("warn", "stream", 20.0)
    assert not holds_answers(saved)


def test_an_old_fail_closed_setting_shows_as_its_new_choice(ctx, qtbot, corral_home):
    from desktop.pages.safety.page import SafetyPage

    (corral_home / "settings.toml").write_text("[safety]\nfail_closed = false\n")
    ctx.settings = Settings.load()  # as the app reads it at start
    widget = SafetyPage(ctx)
    qtbot.addWidget(widget)
    assert widget.when_unavailable.currentData() == "warn"


def test_version_change_rebuilds_the_policy(page):
    page.version.setCurrentIndex(page.version.findData("llama-guard-1"))
    assert [page.policy_table.item(r, 0).text() for r in range(6)] == [
        "O1", "O2", "O3", "O4", "O5", "O6"]
    assert page.policy_table.item(0, 1).text() == "Violence and Hate"


def test_audit_log_table_and_export(page, ctx, qtbot, tmp_path):
    two_checks()
    with qtbot.waitSignal(page.audit_shown, timeout=WAIT):
        page.refresh_audit()
    assert page.audit_stack.currentWidget() is page.audit_table
    assert page.audit_table.rowCount() == 2
    row = [page.audit_table.item(1, c).text() for c in range(7)]
    assert row[1:] == ["42", "input", "unsafe", "S1,S10", "block", "ollama:llama-guard3"]
    assert "Violent Crimes" in page.audit_table.item(1, 4).toolTip()
    assert page.export_button.isEnabled() and page.clear_button.isEnabled()
    out = tmp_path / "audit.csv"
    with qtbot.waitSignal(ctx.bus.status_message, timeout=WAIT) as status:
        page.export_audit(str(out))
    assert status.args[0] == f"Audit log exported to {out}"
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["verdict"] for r in rows] == ["unsafe", "safe"]
    with qtbot.waitSignal(page.audit_shown, timeout=WAIT):
        page.clear_audit()
    assert page.audit_stack.currentWidget() is page.audit_empty
    assert AuditLog().count() == 0
    assert not page.export_button.isEnabled()


def test_an_unreadable_audit_log_says_why(ctx, qtbot):
    from desktop.pages.safety.page import SafetyPage

    default_audit_path().mkdir(parents=True)  # a folder where the database file should be
    page = SafetyPage(ctx)
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.audit_shown, timeout=WAIT):
        page.refresh_audit()
    assert page.audit_stack.currentWidget() is page.audit_empty
    text = page.audit_empty.text()
    assert text.startswith("The audit log cannot be read: ")
    assert str(default_audit_path()) in text
    assert not page.export_button.isEnabled() and not page.clear_button.isEnabled()


def test_a_failed_export_says_why(page, ctx, qtbot, tmp_path):
    two_checks()
    with qtbot.waitSignal(page.audit_shown, timeout=WAIT):
        page.refresh_audit()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the export's folder should be", encoding="utf-8")
    with qtbot.waitSignal(ctx.bus.error, timeout=WAIT) as error:
        page.export_audit(str(blocker / "audit.csv"))
    assert error.args[0].startswith(f"The audit log was not exported: cannot write {blocker}")


def test_a_bug_reading_the_log_is_shown_not_hidden(page, ctx, qtbot, monkeypatch):
    from desktop.pages.safety import jobs

    def broken(job):
        raise TypeError("a bug in the page")

    monkeypatch.setattr(jobs, "read_audit_job", broken)
    with qtbot.waitSignal(ctx.bus.error, timeout=WAIT) as error:
        page.refresh_audit()
    assert error.args[0] == "Unexpected error: TypeError: a bug in the page. The log has details."
    assert page.audit_empty.text() == error.args[0]


@pytest.mark.ollama
def test_try_a_message_with_the_guard(page, ctx, qtbot, ollama_server):
    ollama_server.add_model("llama-guard3:8b")
    ollama_server.script_generate(["unsafe\nS1"])
    ctx.settings.ollama.host = ollama_server.host
    page.model.setCurrentText("ollama:llama-guard3:8b")
    page._model_changed()
    with qtbot.waitSignal(page.ctx.jobs.busy_changed, timeout=20000,
                          check_params_cb=lambda n: n == 0):
        page.test_guard()
    assert "unsafe: S1 Violent Crimes" in page.test_result.text()
    assert AuditLog().count() == 0  # a test check is not a chat turn
    page.grab().save("/tmp/safety/safety_page.png")


# --- the widgets the Chat page shows --------------------------------------------------------


def test_verdict_badge_texts(qtbot):
    from desktop.widgets.verdicts import VerdictBadge

    unsafe = GuardVerdict.from_answer("unsafe\nS1,S10", version="llama-guard-3",
                                      probability=0.97, guard_model="ollama:llama-guard3",
                                      direction="input")
    badge = VerdictBadge(unsafe.to_dict())
    qtbot.addWidget(badge)
    assert badge.text() == "unsafe: S1 Violent Crimes, S10 Hate · p(unsafe) 0.97"
    assert badge.level == "unsafe" and "Blocked" in badge.toolTip()
    badge.set_verdict(GuardVerdict.from_answer("safe", version="llama-guard-3").to_dict())
    assert badge.text() == "safe" and badge.level == "safe"
    badge.set_verdict(GuardVerdict.from_answer("what?", version="llama-guard-3").to_dict())
    assert badge.text() == "guard answer not understood" and "what?" in badge.toolTip()
    warn = GuardVerdict.from_answer("unsafe\nS2", version="llama-guard-3", policy={"S2": "warn"})
    badge.set_verdict(warn.to_dict())
    assert badge.level == "warn"
    badge.set_verdict(None)
    assert badge.isHidden()


def test_code_findings_widget(qtbot):
    from core.safety.code_scan import scan_markdown
    from desktop.widgets.verdicts import CodeFindings

    findings = scan_markdown("```c\nstrcpy(a, b);\n```")
    widget = CodeFindings(findings)
    qtbot.addWidget(widget)
    assert widget.count == 1 and "line 1" in widget.text() and "vulnerable-strcpy" in widget.text()
    widget.set_findings([])
    assert widget.isHidden()
