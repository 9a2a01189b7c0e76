"""What a guard model said, strictly parsed, and what Corral does about it (GuardVerdict).

The parser follows FORMATS.md 3.2: after trimming, the whole answer is exactly ``safe``, or
``unsafe``, a newline and a comma-separated list of codes of that guard version. Anything else
(``safe`` followed by more text included) is "not understood", which never counts as safe.
``unsafe`` with no code, or a code the version does not define, is unsafe and always blocks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from core.errors import CorralError
from core.prompts.guard import GuardVersion, guard_version

if TYPE_CHECKING:
    from core.config import SafetySettings

#: unknown: the guard's answer was not understood; unavailable: the guard could not answer;
#: skipped: that check is off
Verdict = Literal["safe", "unsafe", "unknown", "unavailable", "skipped"]
Action = Literal["block", "warn", "log", "allow"]
Direction = Literal["input", "output", "document"]

NOT_UNDERSTOOD = "guard answer not understood"
NOT_UNDERSTOOD_HINT = ("Check on the Safety page that the Llama Guard version matches the guard "
                       "model.")
COULD_NOT_RUN = "the guard could not run"
ACTIONS: tuple[str, ...] = ("block", "warn", "log")
_SEVERITY = {"allow": 0, "log": 1, "warn": 2, "block": 3}
_UNSAFE = re.compile(r"unsafe\n([^\n]*)")
UNDEFINED = "(not a category of this guard)"


@dataclass(frozen=True)
class ParsedAnswer:
    verdict: Verdict
    categories: tuple[str, ...] = ()
    reason: str = ""  #: why an answer was not understood, or which codes are undefined
    undefined: tuple[str, ...] = ()  #: codes the version does not define (they always block)

    @property
    def strict(self) -> bool:
        """Unsafe with no code or an undefined one: blocked whatever the policy says."""
        return self.verdict == "unsafe" and (bool(self.undefined) or not self.categories)


def parse_guard_answer(text: str, version: str | GuardVersion) -> ParsedAnswer:
    """Parse a guard model's whole answer for one Llama Guard version (FORMATS.md 3.2)."""
    ver = version if isinstance(version, GuardVersion) else guard_version(version)
    if not isinstance(text, str):
        return ParsedAnswer("unknown", (), f"{NOT_UNDERSTOOD}: not text")
    body = text.strip()
    if body == "safe":
        return ParsedAnswer("safe")
    match = _UNSAFE.fullmatch(body)
    if match is None:
        why = ("the guard said nothing" if not body
               else "text after 'safe'" if body.startswith("safe")
               else "'unsafe' without a line of categories" if body == "unsafe"
               else "it should be 'safe', or 'unsafe' and a line of categories")
        return ParsedAnswer("unknown", (), f"{NOT_UNDERSTOOD}: {why}")
    codes = tuple(dict.fromkeys(c.strip() for c in match.group(1).split(",") if c.strip()))
    undefined = tuple(c for c in codes if c not in ver.codes)
    if not codes:
        return ParsedAnswer("unsafe", (), "unsafe without a category")
    if undefined:
        one = len(undefined) == 1
        what = f"is not a {ver.key} category" if one else f"are not {ver.key} categories"
        return ParsedAnswer("unsafe", codes, f"{', '.join(undefined)} {what}", undefined)
    return ParsedAnswer("unsafe", codes)


# --- policy -------------------------------------------------------------------------------


def policy_key(version: str, code: str) -> str:
    """Settings key of one category's action: codes mean different things per version."""
    return f"{version}:{code}"


def category_action(policy: Mapping[str, str], version: str, code: str) -> Action:
    """The user's action for one category (default: block)."""
    value = policy.get(policy_key(version, code)) or policy.get(code) or "block"
    return value if value in ACTIONS else "block"  # type: ignore[return-value]


def unavailable_action(when_unavailable: str) -> Action:
    """What the user chose for a guard that cannot answer: warn only if asked, else block."""
    return "warn" if when_unavailable == "warn" else "block"


def holds_answers(safety: SafetySettings) -> bool:
    """Whether answers wait for the output check before they are shown: "hold", or "auto"
    while any category of the chosen version blocks (an unknown version holds)."""
    if not safety.check_output or safety.answers == "stream":
        return False
    if safety.answers != "auto":
        return True
    try:
        version = guard_version(safety.guard_version)
    except CorralError:
        return True
    return any(category_action(safety.policy, version.key, code) == "block"
               for code in version.codes)


def stricter(a: Action, b: Action) -> Action:
    """The stricter of two actions (block > warn > log > allow)."""
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


def decide_action(parsed: ParsedAnswer, version: str, policy: Mapping[str, str],
                  when_unavailable: str = "block") -> Action:
    """safe -> allow; not understood -> the user's choice for an unavailable guard (block or
    warn, never allow); unsafe -> the strictest action among its categories, or block when a
    code is missing or undefined."""
    if parsed.verdict == "safe":
        return "allow"
    if parsed.verdict != "unsafe":
        return unavailable_action(when_unavailable)
    if parsed.strict:
        return "block"
    actions = [category_action(policy, version, c) for c in parsed.categories]
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
    hint: str = ""  #: what the user can do about a guard that could not run or answer
    elapsed_s: float = 0.0
    checked_at: float = field(default_factory=time.time)

    @classmethod
    def from_answer(
        cls,
        raw: str,
        *,
        version: str,
        policy: Mapping[str, str] | None = None,
        when_unavailable: str = "block",
        guard_model: str = "",
        direction: Direction = "input",
        probability: float | None = None,
        elapsed_s: float = 0.0,
    ) -> GuardVerdict:
        ver = guard_version(version)
        parsed = parse_guard_answer(raw, ver)
        hint = NOT_UNDERSTOOD_HINT if parsed.verdict == "unknown" else ""
        return cls(
            verdict=parsed.verdict,
            categories=list(parsed.categories),
            category_names=[UNDEFINED if c in parsed.undefined else ver.card_name(c)
                            for c in parsed.categories],
            # a probability beside an answer not understood would read as a judgement
            probability=probability if parsed.verdict != "unknown" else None,
            raw=raw,
            action=decide_action(parsed, ver.key, policy or {}, when_unavailable),
            guard_model=guard_model,
            version=ver.key,
            direction=direction,
            reason=parsed.reason,
            hint=hint,
            elapsed_s=elapsed_s,
        )

    @classmethod
    def unavailable(cls, cause: str, *, hint: str = "", when_unavailable: str = "block",
                    guard_model: str = "", version: str = "", direction: Direction = "input",
                    elapsed_s: float = 0.0) -> GuardVerdict:
        """The guard could not answer (``cause``, a sentence; ``hint``: what to do)."""
        return cls("unavailable", guard_model=guard_model, version=version,
                   direction=direction, reason=f"{COULD_NOT_RUN}: {cause.rstrip('.')}",
                   hint=hint, action=unavailable_action(when_unavailable),
                   elapsed_s=elapsed_s)

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    @property
    def flagged(self) -> bool:
        """The UI marks it: unsafe, not understood, or not checked because the guard failed."""
        return self.verdict in ("unsafe", "unknown", "unavailable")

    @property
    def guard_failed(self) -> bool:
        """The guard gave no usable answer (it could not run, or was not understood)."""
        return self.verdict in ("unknown", "unavailable")

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
            text = "unsafe: " + (", ".join(self.labels()) or "no category given")
        elif self.verdict == "unavailable":
            text = "not checked: the guard could not run"
        else:
            text = "guard answer not understood"
        if self.probability is not None:
            text += f" (p unsafe {self.probability:.2f})"
        return text

    def explanation(self) -> str:
        """A sentence for the user: what was checked, what the guard said, what happened, and
        for a guard that could not run, what to do."""
        what = {"input": "Your message", "output": "The answer", "document": "A document passage"}
        subject = what.get(self.direction, "The text")
        model = f" by {self.guard_model}" if self.guard_model else ""
        if self.verdict == "skipped":
            return f"{subject} was not checked: {self.reason or 'that check is off'}."
        if self.verdict == "safe":
            return f"{subject} was checked{model} and judged safe."
        if self.verdict == "unsafe":
            said = (f"{subject} was judged unsafe{model}: "
                    f"{', '.join(self.labels()) or 'no category given'}.")
            if self.reason and self.action == "block":
                return said + (f" It was blocked: {self.reason}, and an answer with a "
                               "missing or undefined category always blocks, whatever your "
                               "policy says.")
        elif self.verdict == "unavailable":
            said = f"{subject} was not checked: {self.reason or COULD_NOT_RUN}."
        else:
            said = f"{subject} could not be judged{model}: {self.reason or NOT_UNDERSTOOD}."
        if self.guard_failed:
            outcome = {"block": " It was blocked, as your safety settings say for a guard that "
                                "cannot judge.",
                       "warn": " Your safety settings let it through with a warning when the "
                               "guard cannot judge."}.get(self.action, "")
        else:
            outcome = {"block": " It was blocked by your safety policy.",
                       "warn": " Your safety policy lets it through with a warning.",
                       "log": " Your safety policy only logs it."}.get(self.action, "")
        hint = f" {self.hint.strip()}" if self.hint.strip() and self.guard_failed else ""
        return said + outcome + hint

    def failure_sentence(self) -> str:
        """For a guard that could not judge: what went wrong and what to do, in one line."""
        what = {"input": "your message", "output": "the answer", "document": "the passage"}
        if self.verdict == "unavailable":
            cause = self.reason.removeprefix(f"{COULD_NOT_RUN}: ")
            said = (f"the safety guard could not check {what.get(self.direction, 'it')}: "
                    f"{cause}.")
        else:
            why = self.reason.removeprefix(f"{NOT_UNDERSTOOD}: ")
            said = f"the safety guard's answer was not understood: {why} ({self.raw.strip()!r})."
        return f"{said} {self.hint}".strip()

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
