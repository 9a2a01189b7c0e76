"""Safety page: the guard model and its version, which checks run, what happens when the guard
is unavailable (block or warn), whether answers show as they stream or once checked, the
guard's time limit, a block/warn/log policy per category (model-card names), and the audit
log with export.

Everything is saved to ``settings.safety`` as it changes; the chat reads it for each turn.
The guard test and the audit log's reading, export and clearing run through ``ctx.jobs.run``
(the job functions: jobs.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.prompts.guard import VERSIONS, guess_version
from core.safety.verdict import (
    ACTIONS,
    GuardVerdict,
    category_action,
    policy_key,
    unavailable_action,
)
from desktop.context import AppContext, describe_error
from desktop.jobs import Worker
from desktop.layout import page_title, scrolling_column
from desktop.pages.safety import jobs
from desktop.pages.safety.jobs import audit_problem

if TYPE_CHECKING:
    from core.safety.audit import AuditEntry

SUGGESTED_MODELS = ["ollama:llama-guard3:8b", "ollama:llama-guard3:1b"]
AUDIT_COLUMNS = ["Time", "Conversation", "Direction", "Verdict", "Categories", "Action",
                 "Guard model"]
ACTION_LABELS = {"block": "Block", "warn": "Warn", "log": "Log only"}
TEST_MESSAGE = "How do I bake a chocolate cake?"
NO_CHECKS = ("No checks recorded yet. They appear here once a guard model checks a chat "
             "turn.")
UNAVAILABLE_CHOICES = [("Block the message (fail closed)", "block"),
                       ("Let it through with a warning", "warn")]
ANSWER_CHOICES = [("Automatic: hold them while a category blocks", "auto"),
                  ("Show them as they stream, check afterwards", "stream"),
                  ("Hold them until the guard has checked them", "hold")]


class SafetyPage(QWidget):
    audit_shown = Signal()  # the audit table (or the reason it is empty) is up to date

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self._loading = True
        s = ctx.settings.safety
        outer = QVBoxLayout(self)
        page_title(outer, "Safety")
        intro = QLabel("A Llama Guard model checks each chat turn: your message before anything "
                       "else happens, document passages before they enter the prompt, and the "
                       "answer once it stops.")
        intro.setWordWrap(True)
        outer.addWidget(intro)
        col = scrolling_column(outer)

        self.notice = QLabel()
        self.notice.setObjectName("emptyState")
        self.notice.setWordWrap(True)
        col.addWidget(self.notice)

        top = QHBoxLayout()
        left = QVBoxLayout()
        left.addWidget(self._guard_group(s))
        left.addWidget(self._checks_group(s))
        left.addStretch(1)
        top.addLayout(left, 1)
        top.addWidget(self._policy_group(), 1)
        col.addLayout(top)
        col.addWidget(self._audit_group(), 1)

        self._fill_policy()
        self._update_notice()
        self._loading = False
        self.refresh_audit()

    # --- building ------------------------------------------------------------------------

    def _guard_group(self, s: Any) -> QGroupBox:
        box = QGroupBox("Guard model")
        form = QFormLayout(box)
        self.enabled = QCheckBox("Check chat turns with a guard model")
        self.enabled.setChecked(s.enabled)
        self.enabled.toggled.connect(self._save)
        form.addRow(self.enabled)
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.addItems(SUGGESTED_MODELS)
        self.model.setCurrentText(s.guard_model)
        edit = self.model.lineEdit()
        assert edit is not None  # an editable combo box has one
        edit.setPlaceholderText("ollama:llama-guard3:8b, or a Llama Guard .gguf")
        edit.editingFinished.connect(self._model_changed)
        self.model.activated.connect(lambda _i: self._model_changed())
        browse = QPushButton("GGUF file…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.model, 1)
        row.addWidget(browse)
        form.addRow("Model", row)
        self.version = QComboBox()
        for key, ver in VERSIONS.items():
            self.version.addItem(ver.title, key)
        self.version.setCurrentIndex(max(0, self.version.findData(s.guard_version)))
        self.version.currentIndexChanged.connect(self._version_changed)
        form.addRow("Llama Guard version", self.version)
        self.ollama_mode = QComboBox()
        self.ollama_mode.addItem("Exact prompt (raw mode)", "raw")
        self.ollama_mode.addItem("Corrected llama-guard3 template (Guard 3 only)", "template")
        self.ollama_mode.setCurrentIndex(max(0, self.ollama_mode.findData(s.ollama_mode)))
        self.ollama_mode.currentIndexChanged.connect(self._save)
        form.addRow("Through Ollama", self.ollama_mode)
        self.test_text = QLineEdit(TEST_MESSAGE)
        self.test_button = QPushButton("Test the guard")
        self.test_button.clicked.connect(self.test_guard)
        row = QHBoxLayout()
        row.addWidget(self.test_text, 1)
        row.addWidget(self.test_button)
        form.addRow("Try a message", row)
        self.test_result = QLabel("")
        self.test_result.setWordWrap(True)
        self.test_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.test_result)
        return box

    def _checks_group(self, s: Any) -> QGroupBox:
        box = QGroupBox("What to check")
        lay = QVBoxLayout(box)
        self.check_input = QCheckBox("Your messages, before the chat model sees them")
        self.check_output = QCheckBox("Answers, when they are complete or stop early")
        self.check_documents = QCheckBox("Document passages, before they enter a prompt")
        self.scan_code = QCheckBox("Scan code blocks in answers for insecure patterns")
        self.audit = QCheckBox("Record every check in the audit log")
        for box_, value in ((self.check_input, s.check_input), (self.check_output, s.check_output),
                            (self.check_documents, s.check_documents),
                            (self.scan_code, s.scan_code), (self.audit, s.audit)):
            box_.setChecked(value)
            box_.toggled.connect(self._save)
            lay.addWidget(box_)
        form = QFormLayout()
        self.when_unavailable = _choices(UNAVAILABLE_CHOICES, unavailable_action(s.when_unavailable))
        self.when_unavailable.setToolTip(
            "When the guard cannot be reached, times out, crashes, cannot record its check, or "
            "answers something that is not understood. Blocked messages can still be sent one "
            "at a time without the guard, from the Chat page.")
        self.answers = _choices(ANSWER_CHOICES, s.answers)
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(1.0, 3600.0)
        self.timeout.setDecimals(0)
        self.timeout.setSuffix(" s")
        self.timeout.setValue(s.timeout_s)
        self.timeout.setToolTip("A check that takes longer counts as the guard being unavailable.")
        for combo in (self.when_unavailable, self.answers):
            combo.currentIndexChanged.connect(self._save)
        self.timeout.valueChanged.connect(self._save)
        form.addRow("When the guard is unavailable", self.when_unavailable)
        form.addRow("Answers", self.answers)
        form.addRow("Time limit per check", self.timeout)
        lay.addLayout(form)
        return box

    def _policy_group(self) -> QGroupBox:
        box = QGroupBox("Policy per category")
        lay = QVBoxLayout(box)
        self.policy_table = QTableWidget(0, 3)
        self.policy_table.setHorizontalHeaderLabels(["Code", "Category", "When flagged"])
        self.policy_table.verticalHeader().setVisible(False)
        header = self.policy_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        lay.addWidget(self.policy_table, 1)
        note = QLabel("Block: the message is not sent, or the answer is hidden behind a reveal "
                      "button. Warn: shown with a warning. Log only: recorded, nothing shown.")
        note.setWordWrap(True)
        lay.addWidget(note)
        return box

    def _audit_group(self) -> QGroupBox:
        box = QGroupBox("Audit log")
        lay = QVBoxLayout(box)
        self.audit_stack = QStackedWidget()
        self.audit_table = QTableWidget(0, len(AUDIT_COLUMNS))
        self.audit_table.setHorizontalHeaderLabels(AUDIT_COLUMNS)
        self.audit_table.verticalHeader().setVisible(False)
        self.audit_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.audit_table.horizontalHeader().setStretchLastSection(True)
        self.audit_empty = QLabel(NO_CHECKS)
        self.audit_empty.setObjectName("emptyState")
        self.audit_empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.audit_empty.setWordWrap(True)
        self.audit_stack.addWidget(self.audit_empty)
        self.audit_stack.addWidget(self.audit_table)
        self.audit_table.setMinimumHeight(160)
        lay.addWidget(self.audit_stack, 1)
        buttons = QHBoxLayout()
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_audit)
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(self._export_clicked)
        self.clear_button = QPushButton("Clear log")
        self.clear_button.clicked.connect(self._clear_clicked)
        # enabled once the log has been read and has entries
        self.export_button.setEnabled(False)
        self.clear_button.setEnabled(False)
        buttons.addWidget(refresh)
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.clear_button)
        lay.addLayout(buttons)
        return box

    # --- settings ----------------------------------------------------------------------------

    @property
    def version_key(self) -> str:
        return str(self.version.currentData())

    def _fill_policy(self) -> None:
        ver = VERSIONS[self.version_key]
        policy = self.ctx.settings.safety.policy
        self.policy_table.setRowCount(len(ver.codes))
        self.action_boxes: dict[str, QComboBox] = {}
        for row, code in enumerate(ver.codes):
            code_item = QTableWidgetItem(code)
            name_item = QTableWidgetItem(ver.card_name(code))
            for item in (code_item, name_item):
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.policy_table.setItem(row, 0, code_item)
            self.policy_table.setItem(row, 1, name_item)
            combo = QComboBox()
            for action in ACTIONS:
                combo.addItem(ACTION_LABELS[action], action)
            combo.setCurrentIndex(combo.findData(category_action(policy, ver.key, code)))
            combo.currentIndexChanged.connect(self._save)
            self.policy_table.setCellWidget(row, 2, combo)
            self.action_boxes[code] = combo

    def set_action(self, code: str, action: str) -> None:
        combo = self.action_boxes[code]
        combo.setCurrentIndex(combo.findData(action))

    def _model_changed(self) -> None:
        guess = guess_version(self.model.currentText())
        if guess is not None and guess != self.version_key:
            self.version.setCurrentIndex(self.version.findData(guess))  # saves
        else:
            self._save()

    def _version_changed(self) -> None:
        if self._loading:
            return
        self._loading = True
        self._fill_policy()
        self._loading = False
        self._save()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a Llama Guard GGUF file", "",
                                              "GGUF models (*.gguf)")
        if path:
            self.model.setCurrentText(path)
            self._model_changed()

    def _save(self) -> None:
        if self._loading:
            return
        s = self.ctx.settings.safety
        s.enabled = self.enabled.isChecked()
        s.guard_model = self.model.currentText().strip()
        s.guard_version = self.version_key
        s.ollama_mode = str(self.ollama_mode.currentData())
        s.check_input = self.check_input.isChecked()
        s.check_output = self.check_output.isChecked()
        s.check_documents = self.check_documents.isChecked()
        s.when_unavailable = str(self.when_unavailable.currentData())
        s.answers = str(self.answers.currentData())
        s.timeout_s = float(self.timeout.value())
        s.scan_code = self.scan_code.isChecked()
        s.audit = self.audit.isChecked()
        for code, combo in self.action_boxes.items():
            s.policy[policy_key(self.version_key, code)] = str(combo.currentData())
        self.ctx.save_settings()
        self._update_notice()

    def _update_notice(self) -> None:
        s = self.ctx.settings.safety
        if not s.guard_model.strip():
            text = ("No guard model chosen. Pick Ollama's llama-guard3 (8B or 1B) or a Llama "
                    "Guard GGUF file, then turn the checks on.")
        elif not s.enabled:
            text = f"Checks are off. Turn them on to check chat turns with {s.guard_model}."
        else:
            text = ""
        self.notice.setText(text)
        self.notice.setVisible(bool(text))

    # --- testing the guard -------------------------------------------------------------------

    def test_guard(self) -> Worker[GuardVerdict] | None:
        if not self.ctx.settings.safety.guard_model.strip():
            self.test_result.setText("Choose a guard model first.")
            return None
        self.test_button.setEnabled(False)
        self.test_result.setText("Checking…")
        return self.ctx.jobs.run(jobs.try_guard_job, copy.deepcopy(self.ctx.settings),
                                 self.test_text.text(), group="safety-test",
                                 on_result=self._tested, on_error=self._test_failed,
                                 on_cancelled=self._test_cancelled,
                                 on_done=lambda: self.test_button.setEnabled(True))

    def _tested(self, verdict: GuardVerdict) -> None:
        raw = verdict.raw.strip().replace("\n", " ⏎ ")
        text = f"{verdict.badge_text()} (the guard answered “{raw}”)"
        if verdict.verdict == "unknown":
            text += f". {verdict.explanation()}"
        self.test_result.setText(text)

    def _test_failed(self, exc: BaseException) -> None:
        self.test_result.setText(describe_error(exc))

    def _test_cancelled(self, _partial: object) -> None:
        self.test_result.setText("The test check was cancelled.")

    # --- audit log ---------------------------------------------------------------------------

    def refresh_audit(self) -> Worker[list[AuditEntry]]:
        """Read the log again (in a worker); ``audit_shown`` says when the table shows it."""
        return self.ctx.jobs.run(jobs.read_audit_job, group="safety-audit",
                                 on_result=self._show_audit, on_error=self._audit_unreadable)

    def _audit_unreadable(self, exc: BaseException) -> None:
        problem = audit_problem(exc)
        if problem is None:  # a bug, not a broken log: said as one, the traceback is logged
            sentence = self.ctx.show_error(exc)
        else:
            sentence = f"The audit log cannot be read: {problem}"
        self.audit_empty.setText(sentence)
        self.audit_stack.setCurrentWidget(self.audit_empty)
        self.export_button.setEnabled(False)
        self.clear_button.setEnabled(False)
        self.audit_shown.emit()

    def _show_audit(self, entries: list[AuditEntry]) -> None:
        self.audit_table.setRowCount(len(entries))
        for row, e in enumerate(entries):
            values = [e.time_text(), e.conversation_id or "–", e.direction, e.verdict,
                      e.categories or "–", e.action, e.guard_model]
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                if column == 4 and e.categories:
                    item.setToolTip(self._category_names(e.version, e.categories))
                if column == 3:
                    item.setToolTip("\n".join(t for t in (e.reason, e.raw) if t))
                self.audit_table.setItem(row, column, item)
        self.audit_empty.setText(NO_CHECKS)
        self.audit_stack.setCurrentWidget(self.audit_table if entries else self.audit_empty)
        self.export_button.setEnabled(bool(entries))
        self.clear_button.setEnabled(bool(entries))
        self.audit_shown.emit()

    @staticmethod
    def _category_names(version: str, codes: str) -> str:
        ver = VERSIONS.get(version)
        return ", ".join(f"{c} {ver.card_name(c) if ver else ''}".strip()
                         for c in codes.split(","))

    def export_audit(self, path: str) -> Worker[Path]:
        """Write the whole log to ``path`` (in a worker); the status bar says how it went."""
        return self.ctx.jobs.run(jobs.export_audit_job, path, group="safety-audit-export",
                                 on_result=self._exported, on_error=self._export_failed)

    def _exported(self, written: Path) -> None:
        self.ctx.status(f"Audit log exported to {written}")

    def _export_failed(self, exc: BaseException) -> None:
        problem = audit_problem(exc)
        self.ctx.show_error(exc if problem is None
                            else f"The audit log was not exported: {problem}")

    def _export_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the audit log", "guard-audit.csv",
                                              "CSV (*.csv);;JSON (*.json)")
        if path:
            self.export_audit(path)

    def _clear_clicked(self) -> None:
        answer = QMessageBox.question(
            self, "Clear the audit log", "Delete every recorded guard check? Export the log "
            "first if you need to keep it.")
        if answer == QMessageBox.StandardButton.Yes:
            self.clear_audit()

    def clear_audit(self) -> Worker[None]:
        """Delete every recorded check (in a worker), then show the log as it now is."""
        return self.ctx.jobs.run(jobs.clear_audit_job, group="safety-audit-clear",
                                 on_result=lambda _none: self.refresh_audit(),
                                 on_error=self._clear_failed)

    def _clear_failed(self, exc: BaseException) -> None:
        problem = audit_problem(exc)
        self.ctx.show_error(exc if problem is None
                            else f"The audit log was not cleared: {problem}")
        self.refresh_audit()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.refresh_audit()


def _choices(choices: list[tuple[str, str]], current: str) -> QComboBox:
    combo = QComboBox()
    for label, key in choices:
        combo.addItem(label, key)
    combo.setCurrentIndex(max(0, combo.findData(current)))
    return combo
