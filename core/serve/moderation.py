"""Llama Guard's verdicts in OpenAI's moderation shape: each guard code maps to OpenAI's
categories by ``OPENAI_CATEGORIES`` (the README shows it as a table), and the raw codes travel
beside them in a ``corral`` field. Codes differ between guard versions (Defamation was
inserted as S5 in version 3), so the table is per version."""

from __future__ import annotations

from typing import Any

from core.safety.verdict import GuardVerdict

#: every category of OpenAI's moderation answer (omni-moderation)
CATEGORIES: tuple[str, ...] = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
    "sexual/minors", "violence", "violence/graphic",
)

_LG3: dict[str, tuple[str, ...]] = {
    "S1": ("violence", "illicit/violent"),  # Violent Crimes
    "S2": ("illicit",),  # Non-Violent Crimes
    "S3": ("sexual", "illicit"),  # Sex-Related Crimes
    "S4": ("sexual/minors",),  # Child Sexual Exploitation
    "S5": ("harassment",),  # Defamation
    "S6": (),  # Specialized Advice
    "S7": (),  # Privacy
    "S8": (),  # Intellectual Property
    "S9": ("violence", "illicit/violent"),  # Indiscriminate Weapons
    "S10": ("hate",),  # Hate
    "S11": ("self-harm",),  # Suicide & Self-Harm
    "S12": ("sexual",),  # Sexual Content
    "S13": (),  # Elections
    "S14": ("illicit",),  # Code Interpreter Abuse (8B only)
}

#: guard version -> guard code -> OpenAI categories (none: only the raw code says it)
OPENAI_CATEGORIES: dict[str, dict[str, tuple[str, ...]]] = {
    "llama-guard-3": _LG3,
    "llama-guard-3-1b": {c: v for c, v in _LG3.items() if c != "S14"},
    "llama-guard-2": {
        "S1": ("violence", "illicit/violent"),  # Violent Crimes
        "S2": ("illicit",),  # Non-Violent Crimes
        "S3": ("sexual", "illicit"),  # Sex-Related Crimes
        "S4": ("sexual/minors",),  # Child Sexual Exploitation
        "S5": (),  # Specialized Advice
        "S6": (),  # Privacy
        "S7": (),  # Intellectual Property
        "S8": ("violence", "illicit/violent"),  # Indiscriminate Weapons
        "S9": ("hate",),  # Hate
        "S10": ("self-harm",),  # Suicide & Self-Harm
        "S11": ("sexual",),  # Sexual Content
    },
    "llama-guard-1": {
        "O1": ("violence", "hate"),  # Violence and Hate
        "O2": ("sexual",),  # Sexual Content
        "O3": ("illicit",),  # Criminal Planning
        "O4": ("illicit/violent",),  # Guns and Illegal Weapons
        "O5": ("illicit",),  # Regulated or Controlled Substances
        "O6": ("self-harm",),  # Self-Harm
    },
}


def openai_categories(version: str, codes: list[str]) -> list[str]:
    table = OPENAI_CATEGORIES.get(version, {})
    out: list[str] = []
    for code in codes:
        out += [c for c in table.get(code, ()) if c not in out]
    return out


def flagged(verdict: GuardVerdict) -> bool:
    """Unsafe, or not judged while the policy blocks what the guard cannot judge (fail
    closed: a guard that could not run never reads as "not flagged")."""
    if verdict.verdict == "unsafe":
        return True
    return verdict.guard_failed and verdict.action == "block"


def moderation_result(verdict: GuardVerdict) -> dict[str, Any]:
    """One entry of ``results``: categories, scores and the guard's own words."""
    hit = set(openai_categories(verdict.version, verdict.categories))
    unsafe = verdict.verdict == "unsafe"
    if verdict.probability is not None:  # the guard's first-token probability of "unsafe"
        score = float(verdict.probability)
    else:
        score = 1.0 if unsafe else 0.0
    return {
        "flagged": flagged(verdict),
        "categories": {c: unsafe and c in hit for c in CATEGORIES},
        "category_scores": {c: score if c in hit else 0.0 for c in CATEGORIES},
        "category_applied_input_types": {c: ["text"] if c in hit else [] for c in CATEGORIES},
        "corral": {
            "verdict": verdict.verdict,
            "action": verdict.action,
            "codes": list(verdict.categories),
            "names": list(verdict.category_names),
            "probability": verdict.probability,
            "guard_model": verdict.guard_model,
            "version": verdict.version,
            "raw": verdict.raw,
            "reason": verdict.reason,
            "explanation": verdict.explanation(),
        },
    }
