"""The Safety page: guard model and version, per-category policy saved to settings, the audit
log table and its export, and a test check through the loopback Ollama server."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from core.config import Settings
from core.safety.audit import AuditLog
from core.safety.verdict import GuardVerdict


@pytest.fixture
def page(ctx, qtbot):
    from desktop.pages.safety.page import SafetyPage

    widget = SafetyPage(ctx)
    qtbot.addWidget(widget)
    widget.resize(1100, 800)
    return widget


def test_empty_state_says_what_to_do(page):
    assert "No guard model chosen" in page.notice.text()
    assert page.audit_stack.currentWidget() is page.audit_empty
    assert not page.export_button.isEnabled()


def test_choosing_a_model_picks_its_version_and_policy_table(page, qtbot):
    page.model.setCurrentText("ollama:llama-guard3:1b")
    page._model_changed()
    assert page.version_key == "llama-guard-3-1b"
    assert page.policy_table.rowCount() == 13  # the 1B model has no S14
    names = [page.policy_table.item(r, 1).text() for r in range(13)]
    assert "Suicide & Self-Harm" in names  # model-card names, not prompt names
    page.enabled.setChecked(True)
    page.set_action("S1", "warn")
    page.fail_closed.setChecked(False)
    saved = Settings.load().safety
    assert saved.guard_model == "ollama:llama-guard3:1b" and saved.enabled
    assert saved.guard_version == "llama-guard-3-1b"
    assert saved.policy["llama-guard-3-1b:S1"] == "warn"
    assert saved.policy["llama-guard-3-1b:S2"] == "block"
    assert saved.fail_closed is False
    assert not page.notice.isVisible()


def test_version_change_rebuilds_the_policy(page):
    page.version.setCurrentIndex(page.version.findData("llama-guard-1"))
    assert [page.policy_table.item(r, 0).text() for r in range(6)] == [
        "O1", "O2", "O3", "O4", "O5", "O6"]
    assert page.policy_table.item(0, 1).text() == "Violence and Hate"


def test_audit_log_table_and_export(page, tmp_path):
    audit = AuditLog()
    audit.record(GuardVerdict.from_answer("unsafe\nS1,S10", version="llama-guard-3",
                                          guard_model="ollama:llama-guard3", direction="input"),
                 "42")
    audit.record(GuardVerdict.from_answer("safe", version="llama-guard-3",
                                          guard_model="ollama:llama-guard3", direction="output"),
                 "42")
    page.refresh_audit()
    assert page.audit_stack.currentWidget() is page.audit_table
    assert page.audit_table.rowCount() == 2
    row = [page.audit_table.item(1, c).text() for c in range(7)]
    assert row[1:] == ["42", "input", "unsafe", "S1,S10", "block", "ollama:llama-guard3"]
    assert "Violent Crimes" in page.audit_table.item(1, 4).toolTip()
    out = page.export_audit(str(tmp_path / "audit.csv"))
    rows = list(csv.DictReader(io.StringIO(Path(out).read_text(encoding="utf-8"))))
    assert [r["verdict"] for r in rows] == ["unsafe", "safe"]
    page.clear_audit()
    assert page.audit_stack.currentWidget() is page.audit_empty


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
    assert widget.count == 1 and "line 1" in widget.text() and "c-unsafe-string" in widget.text()
    widget.set_findings([])
    assert widget.isHidden()
