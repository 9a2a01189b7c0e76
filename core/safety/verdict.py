"""What a guard model said, strictly parsed, and what Corral does about it (GuardVerdict).

The parser is strict and total: ``safe``, or ``unsafe`` with a second line of comma-separated
codes the selected Llama Guard version knows; anything else is "unknown" (guard answer not
understood), which the policy treats like a block by default and never like "safe".
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from core.prompts.guard import GuardVersion, guard_version

Verdict = Literal["safe", "unsafe", "unknown", "skipped"]  #: skipped: that check is off
Action = Literal["block", "warn", "log", "allow"]
Direction = Literal["input", "output", "document"]

NOT_UNDERSTOOD = "guard answer not understood"
ACTIONS: tuple[str, ...] = ("block", "warn", "log")
_SEVERITY = {"allow": 0, "log": 1, "warn": 2, "block": 3}
_CODE = re.compile(r"[SO][0-9]{1,2}")


@dataclass(frozen=True)
class ParsedAnswer:
    verdict: Verdict
    categories: tuple[str, ...] = ()
    reason: str = ""  #: why an answer was not understood (empty otherwise)


def parse_guard_answer(text: str, version: str | GuardVersion) -> ParsedAnswer:
    """Parse a guard model's answer for one Llama Guard version.

    Whitespace around the answer (Llama Guard 3 starts with a blank line) and around each code
    is tolerated; nothing else is. Unknown or duplicated codes, a missing or extra line, other
    words, end-of-turn tokens written as text, or an empty answer give ``unknown``.
    """
    ver = version if isinstance(version, GuardVersion) else guard_version(version)
    if not isinstance(text, str):
        return ParsedAnswer("unknown", (), f"{NOT_UNDERSTOOD}: not text")
    body = text.strip()
    if not body:
        return ParsedAnswer("unknown", (), f"{NOT_UNDERSTOOD}: the guard said nothing")
    lines = [line.strip() for line in body.split("\n")]
    head = lines[0]
    if head == "safe":
        if len(lines) == 1:
            return ParsedAnswer("safe")
        return ParsedAnswer("unknown", (), f"{NOT_UNDERSTOOD}: text after 'safe'")
    if head != "unsafe":
        return ParsedAnswer(
            "unknown", (), f"{NOT_UNDERSTOOD}: it should start with 'safe' or 'unsafe'"
        )
    if len(lines) == 1:
        return ParsedAnswer("unknown", (), f"{NOT_UNDERSTOOD}: 'unsafe' without categories")
    if len(lines) > 2:
        return ParsedAnswer("unknown", (), f"{NOT_UNDERSTOOD}: more than two lines")
    codes = [c.strip() for c in lines[1].split(",")]
    seen: list[str] = []
    for code in codes:
        if not _CODE.fullmatch(code):
            return ParsedAnswer("unknown", (), f"{NOT_UNDERSTOOD}: {code!r} is not a category")
        if code not in ver.codes:
            return ParsedAnswer(
                "unknown", (), f"{NOT_UNDERSTOOD}: {code} is not a {ver.key} category"
            )
        if code in seen:
            return ParsedAnswer("unknown", (), f"{NOT_UNDERSTOOD}: {code} listed twice")
        seen.append(code)
    return ParsedAnswer("unsafe", tuple(seen))


# --- policy -------------------------------------------------------------------------------


def policy_key(version: str, code: str) -> str:
    """Settings key of one category's action: codes mean different things per version."""
    return f"{version}:{code}"


def category_action(policy: Mapping[str, str], version: str, code: str) -> Action:
    """The user's action for one category (default: block)."""
    value = policy.get(policy_key(version, code)) or policy.get(code) or "block"
    return value if value in ACTIONS else "block"  # type: ignore[return-value]


def decide_action(
    parsed: ParsedAnswer, version: str, policy: Mapping[str, str], fail_closed: bool
) -> Action:
    """safe -> allow; unsafe -> the strictest action among its categories; unknown -> block when
    failing closed, else warn (never silently allowed)."""
    if parsed.verdict == "safe":
        return "allow"
    if parsed.verdict == "unknown":
        return "block" if fail_closed else "warn"
    actions = [category_action(policy, version, c) for c in parsed.categories] or ["block"]
    return max(actions, key=lambda a: _SEVERITY[a])  # type: ignore[return-value]


# --- the verdict the app shows and stores ------------------------------------------------


@dataclass
class GuardVerdict:
    """One guard check: what the guard said and what Corral does about it."""

    verdict: Verdict
    categories: list[str] = field(default_factory=list)
    category_names: list[str] = field(default_factory=list)
    probability: float | None = None  #: probability of "unsafe" when the backend exposes it
    raw: str = ""
    action: Action = "allow"
    guard_model: str = ""
    version: str = ""
    direction: Direction = "input"
    reason: str = ""
    elapsed_s: float = 0.0
    checked_at: float = field(default_factory=time.time)

    @classmethod
    def from_answer(
        cls,
        raw: str,
        *,
        version: str,
        policy: Mapping[str, str] | None = None,
        fail_closed: bool = True,
        guard_model: str = "",
        direction: Direction = "input",
        probability: float | None = None,
        elapsed_s: float = 0.0,
    ) -> GuardVerdict:
        ver = guard_version(version)
        parsed = parse_guard_answer(raw, ver)
        return cls(
            verdict=parsed.verdict,
            categories=list(parsed.categories),
            category_names=[ver.card_name(c) for c in parsed.categories],
            probability=probability,
            raw=raw,
            action=decide_action(parsed, ver.key, policy or {}, fail_closed),
            guard_model=guard_model,
            version=ver.key,
            direction=direction,
            reason=parsed.reason,
            elapsed_s=elapsed_s,
        )

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    @property
    def flagged(self) -> bool:
        """The UI marks it: unsafe, or not understood."""
        return self.verdict in ("unsafe", "unknown")

    def labels(self) -> list[str]:
        """``["S1 Violent Crimes", "S10 Hate"]``."""
        return [f"{c} {n}" for c, n in zip(self.categories, self.category_names, strict=False)]

    def badge_text(self) -> str:
        """Short text for a badge: "safe", "unsafe: S1 Violent Crimes (p=0.97)", ..."""
        if self.verdict == "skipped":
            return "not checked"
        if self.verdict == "safe":
            text = "safe"
        elif self.verdict == "unsafe":
            text = "unsafe: " + ", ".join(self.labels())
        else:
            text = "guard answer not understood"
        if self.probability is not None:
            text += f" (p unsafe {self.probability:.2f})"
        return text

    def explanation(self) -> str:
        """A sentence for the user: what was checked, what the guard said, what happened."""
        what = {"input": "Your message", "output": "The answer", "document": "A document passage"}
        subject = what.get(self.direction, "The text")
        model = f" by {self.guard_model}" if self.guard_model else ""
        if self.verdict == "skipped":
            return f"{subject} was not checked: {self.reason or 'that check is off'}."
        if self.verdict == "safe":
            return f"{subject} was checked{model} and judged safe."
        if self.verdict == "unsafe":
            said = f"{subject} was judged unsafe{model}: {', '.join(self.labels())}."
        else:
            said = f"{subject} could not be judged{model}: {self.reason or NOT_UNDERSTOOD}."
        outcome = {
            "block": " It was blocked by your safety policy.",
            "warn": " Your safety policy lets it through with a warning.",
            "log": " Your safety policy only logs it.",
            "allow": "",
        }[self.action]
        return said + outcome

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GuardVerdict:
        names = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in raw.items() if k in names}
        data["categories"] = list(data.get("categories") or [])
        data["category_names"] = list(data.get("category_names") or [])
        return cls(**data)


def combine(verdicts: Sequence[GuardVerdict]) -> GuardVerdict | None:
    """The strictest of several verdicts (document passages): the one whose action weighs most."""
    if not verdicts:
        return None
    return max(verdicts, key=lambda v: (_SEVERITY[v.action], v.verdict != "safe"))
