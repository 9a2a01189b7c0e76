"""Small safety widgets the Chat page shows: a verdict badge under a message, and the code-scan
findings next to a code block. They read plain dicts (GuardVerdict.to_dict(), Finding)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget

#: level -> (background, text colour)
COLOURS = {
    "safe": ("#e3f4e6", "#1f6b2c"),
    "warn": ("#fff3d6", "#7a5300"),
    "unsafe": ("#fde4e1", "#9b1c12"),
    "unknown": ("#ece4f7", "#4f2d84"),
    "skipped": ("#eeeeee", "#555555"),
}


def badge_parts(verdict: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """(text, tooltip, level) for a verdict dict; level picks the colours."""
    if not verdict:
        return "", "", "skipped"
    kind = str(verdict.get("verdict", "unknown"))
    action = str(verdict.get("action", ""))
    direction = str(verdict.get("direction", ""))
    probability = verdict.get("probability")
    codes = list(verdict.get("categories") or [])
    names = list(verdict.get("category_names") or [])
    if kind == "skipped":
        return "not checked", str(verdict.get("reason", "")), "skipped"
    if kind == "safe":
        text, level = "safe", "safe"
    elif kind == "unsafe":
        labels = [f"{c} {n}".strip() for c, n in zip(codes, names + [""] * len(codes),
                                                    strict=False)]
        text = "unsafe: " + ", ".join(labels)
        level = "unsafe" if action == "block" else "warn"
    elif str(verdict.get("reason", "")).startswith("the guard could not run"):
        text, level = "not checked: the guard could not run", "unknown"
    else:
        text, level = "guard answer not understood", "unknown"
    if isinstance(probability, (int, float)):
        text += f" · p(unsafe) {float(probability):.2f}"
    who = {"input": "your message", "output": "the answer", "document": "a passage"}
    tip = [f"Guard check of {who.get(direction, 'the text')} by "
           f"{verdict.get('guard_model') or 'the guard model'} ({verdict.get('version', '')})."]
    if verdict.get("reason"):
        tip.append(str(verdict["reason"]))
    if action:
        tip.append({"block": "Blocked by your safety policy.", "warn": "Allowed with a warning.",
                    "log": "Logged only.", "allow": ""}.get(action, ""))
    raw = str(verdict.get("raw", "")).strip()
    if raw:
        tip.append(f"The guard answered: {raw!r}")
    return text, "\n".join(t for t in tip if t), level


class VerdictBadge(QLabel):
    """A coloured pill: "safe", "unsafe: S1 Violent Crimes · p(unsafe) 0.97", ..."""

    def __init__(self, verdict: Mapping[str, Any] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("verdictBadge")
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.set_verdict(verdict)

    def set_verdict(self, verdict: Mapping[str, Any] | None) -> None:
        text, tip, level = badge_parts(verdict)
        self.level = level
        self.setText(text)
        self.setToolTip(tip)
        self.setVisible(bool(text))
        bg, fg = COLOURS[level]
        self.setStyleSheet(f"QLabel#verdictBadge {{ background: {bg}; color: {fg}; "
                           "border-radius: 8px; padding: 1px 8px; }")


def _field(finding: Any, key: str) -> Any:
    """One field of a finding: a core ``Finding`` or its dict (a stored message's)."""
    return finding.get(key) if isinstance(finding, Mapping) else getattr(finding, key)


def findings_html(findings: Sequence[Any]) -> str:
    """The code-scan findings of one block as a short HTML list (line, rule, why)."""
    if not findings:
        return ""
    items = []
    for f in findings:
        items.append(
            f"<li><b>line {int(_field(f, 'line'))}</b>: "
            f"{html.escape(str(_field(f, 'title')))} "
            f"<span style='color:#777'>[{html.escape(str(_field(f, 'rule_id')))}]</span><br>"
            f"{html.escape(str(_field(f, 'why')))}</li>")
    return ("<div style='color:#9b1c12'>Possible security problems in this code:</div>"
            f"<ul style='margin-top:2px'>{''.join(items)}</ul>")


class CodeFindings(QLabel):
    """The findings next to one code block; hidden when there are none."""

    def __init__(self, findings: Sequence[Any] = (), parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("codeFindings")
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.set_findings(findings)

    def set_findings(self, findings: Sequence[Any]) -> None:
        self.count = len(findings)
        self.setText(findings_html(findings))
        self.setVisible(bool(findings))
