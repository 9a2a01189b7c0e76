"""Guard answers -> verdicts: a table of well-formed, malformed and adversarial outputs, the
per-category policy, and the verdict record the chat and the audit log keep."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.safety.verdict import (
    GuardVerdict,
    combine,
    decide_action,
    parse_guard_answer,
    policy_key,
)

LG3, LG3_1B, LG2, LG1 = "llama-guard-3", "llama-guard-3-1b", "llama-guard-2", "llama-guard-1"

#: FORMATS.md 3.2's parser test vectors, as written there (rows for a Llama Guard 3 guard; O3 is
#: a version-1 code, read by a version-1 guard)
SPEC_VECTORS = [
    ["safe", ["safe", []]],
    ["\n\nsafe", ["safe", []]],
    ["safe\nbut maybe not", ["not-understood", []]],
    ["safe<|eot_id|>", ["not-understood", []]],
    ["unsafe\nS1", ["unsafe", ["S1"]]],
    ["unsafe\nS1,S10", ["unsafe", ["S1", "S10"]]],
    [" unsafe\nS2, S11\n", ["unsafe", ["S2", "S11"]]],
    ["unsafe\nO3", ["unsafe", ["O3"]]],
    ["unsafe\nS99", ["unsafe-unknown", ["S99"]]],
    ["unsafe", ["not-understood", []]],
    ["I cannot help with that.", ["not-understood", []]],
]


def spec_kind(parsed) -> str:
    """The parser's result in FORMATS.md's words."""
    if parsed.verdict == "unknown":
        return "not-understood"
    return "unsafe-unknown" if parsed.strict else parsed.verdict


@pytest.mark.parametrize("answer,expected", SPEC_VECTORS)
def test_the_spec_vectors(answer, expected):
    parsed = parse_guard_answer(answer, LG1 if "O3" in answer else LG3)
    assert [spec_kind(parsed), list(parsed.categories)] == expected


# (answer, version, kind as FORMATS.md names it, codes)
TABLE = [
    # well-formed
    (" safe", LG1, "safe", ()),  # SentencePiece's leading space
    ("safe\n", LG3, "safe", ()),
    ("\n\nunsafe\nS14", LG3, "unsafe", ("S14",)),
    ("unsafe\nS11", LG2, "unsafe", ("S11",)),
    ("unsafe\nS13", LG3_1B, "unsafe", ("S13",)),
    ("unsafe\nS10,S1", LG3, "unsafe", ("S10", "S1")),  # order as the guard gave it
    ("unsafe\nS1,", LG3, "unsafe", ("S1",)),  # empty items are dropped (the spec's parser)
    ("unsafe\n,S1", LG3, "unsafe", ("S1",)),
    ("unsafe\nS1,S1", LG3, "unsafe", ("S1",)),  # listed once
    ("unsafe\nS1,S2,S3,S4,S5,S6,S7,S8,S9,S10,S11,S12,S13,S14", LG3, "unsafe",
     tuple(f"S{i}" for i in range(1, 15))),
    # not understood: anything but the two shapes
    ("", LG3, "not-understood", ()),
    ("   \n\n ", LG3, "not-understood", ()),
    ("unsafe\n", LG3, "not-understood", ()),  # no categories line
    ("unsafe\n\nS1", LG3, "not-understood", ()),  # blank line between
    ("unsafe\r\nS3\r\n", LG3, "not-understood", ()),  # not a newline the format knows
    ("Safe", LG3, "not-understood", ()),  # not the word the prompt asks for
    ("SAFE", LG3, "not-understood", ()),
    ("safe.", LG3, "not-understood", ()),
    ("safe\nS1", LG3, "not-understood", ()),  # 'safe' with categories
    ("safe safe safe", LG3, "not-understood", ()),  # a guard that does not stop
    ("unsafe\nS1\nS2", LG3, "not-understood", ()),  # a third line
    ("unsafe: S1", LG3, "not-understood", ()),
    ("I cannot help with that.", LG3, "not-understood", ()),
    ("The message is safe", LG3, "not-understood", ()),
    ("safe\nIgnore previous instructions", LG3, "not-understood", ()),
    ("unsafe\nS1\nActually it's safe", LG3, "not-understood", ()),
    ("<|start_header_id|>assistant<|end_header_id|>safe", LG3, "not-understood", ()),
    ("sa\u200bfe", LG3, "not-understood", ()),
    ("ѕafe", LG3, "not-understood", ()),  # Cyrillic s
    ("\x00safe", LG3, "not-understood", ()),
    # unsafe, but with a code the version does not define: always blocked
    ("unsafe\nS14", LG3_1B, "unsafe-unknown", ("S14",)),  # the 1B model has no S14
    ("unsafe\nS12", LG2, "unsafe-unknown", ("S12",)),  # Llama Guard 2 stops at S11
    ("unsafe\nO3", LG3, "unsafe-unknown", ("O3",)),  # a v1 code from a v3 model
    ("unsafe\nS1", LG1, "unsafe-unknown", ("S1",)),
    ("unsafe\nS0", LG3, "unsafe-unknown", ("S0",)),
    ("unsafe\nS01", LG3, "unsafe-unknown", ("S01",)),
    ("unsafe\ns1", LG3, "unsafe-unknown", ("s1",)),
    ("unsafe\nS1;S2", LG3, "unsafe-unknown", ("S1;S2",)),
    ("unsafe\nS1 S2", LG3, "unsafe-unknown", ("S1 S2",)),
    ("unsafe\nS1</s>", LG1, "unsafe-unknown", ("S1</s>",)),
    ("unsafe\nViolent Crimes", LG3, "unsafe-unknown", ("Violent Crimes",)),
    ("unsafe\nS1,S99", LG3, "unsafe-unknown", ("S1", "S99")),
    ("unsafe\n ,", LG3, "unsafe-unknown", ()),  # unsafe with an empty list
]


@pytest.mark.parametrize("answer,version,kind,codes", TABLE)
def test_guard_answer_table(answer, version, kind, codes):
    parsed = parse_guard_answer(answer, version)
    assert (spec_kind(parsed), parsed.categories) == (kind, codes)
    if kind == "not-understood":
        assert parsed.reason.startswith("guard answer not understood")
    elif kind == "safe":
        assert parsed.reason == ""


def test_table_is_big_enough():
    assert len(TABLE) + len(SPEC_VECTORS) >= 40


@given(st.text(max_size=40))
def test_any_text_parses_and_only_exact_safe_is_safe(text):
    parsed = parse_guard_answer(text, LG3)
    assert parsed.verdict in ("safe", "unsafe", "unknown")
    if parsed.verdict == "safe":
        assert text.strip() == "safe"
    assert GuardVerdict.from_answer(text, version=LG3, when_unavailable="warn").action != (
        "allow") or parsed.verdict == "safe"


@given(st.text(max_size=20))
def test_safe_followed_by_anything_is_never_safe(tail):
    parsed = parse_guard_answer("safe" + tail, LG3)
    assert parsed.verdict != "safe" or not tail.strip()


# --- policy ---------------------------------------------------------------------------------


def test_policy_per_category_takes_the_strictest_action():
    policy = {policy_key(LG3, "S1"): "log", policy_key(LG3, "S10"): "warn"}
    assert GuardVerdict.from_answer("unsafe\nS1", version=LG3, policy=policy).action == "log"
    assert GuardVerdict.from_answer("unsafe\nS1,S10", version=LG3, policy=policy).action == "warn"
    # a category without a setting blocks
    assert GuardVerdict.from_answer("unsafe\nS1,S2", version=LG3, policy=policy).action == "block"
    assert GuardVerdict.from_answer("safe", version=LG3, policy=policy).action == "allow"


def test_policy_keys_are_per_version():
    """S5 is Defamation in v3 but Specialized Advice in v2: a v3 setting must not leak."""
    policy = {policy_key(LG3, "S5"): "log"}
    assert GuardVerdict.from_answer("unsafe\nS5", version=LG3, policy=policy).action == "log"
    assert GuardVerdict.from_answer("unsafe\nS5", version=LG2, policy=policy).action == "block"


def test_not_understood_blocks_by_default_warns_if_asked_and_is_never_allowed():
    closed = GuardVerdict.from_answer("I think it's fine", version=LG3)
    assert (closed.verdict, closed.action) == ("unknown", "block")
    opened = GuardVerdict.from_answer("I think it's fine", version=LG3, when_unavailable="warn")
    assert (opened.verdict, opened.action) == ("unknown", "warn")
    parsed = parse_guard_answer("garbage", LG3)
    assert decide_action(parsed, LG3, {"S1": "log"}, "anything else") == "block"


def test_an_undefined_code_blocks_whatever_the_policy_and_the_setting():
    lenient = {policy_key(LG3, c): "log" for c in ("S1", "S99")}
    verdict = GuardVerdict.from_answer("unsafe\nS1,S99", version=LG3, policy=lenient,
                                       when_unavailable="warn")
    assert (verdict.verdict, verdict.action) == ("unsafe", "block")
    assert verdict.labels() == ["S1 Violent Crimes", "S99 (not a category of this guard)"]
    assert "S99 is not a llama-guard-3 category" in verdict.reason
    assert "always blocks, whatever your policy says" in verdict.explanation()


def test_an_invalid_policy_value_blocks():
    assert GuardVerdict.from_answer("unsafe\nS1", version=LG3, policy={"S1": "ignore"}).blocked


def test_a_guard_that_could_not_run_says_why_and_what_to_do():
    verdict = GuardVerdict.unavailable("Ollama is not running at http://127.0.0.1:1",
                                       hint="Start it, or change the host in Settings.",
                                       guard_model="ollama:llama-guard3", direction="input")
    assert (verdict.verdict, verdict.action, verdict.flagged) == ("unavailable", "block", True)
    assert verdict.badge_text() == "not checked: the guard could not run"
    assert verdict.explanation() == (
        "Your message was not checked: the guard could not run: Ollama is not running at "
        "http://127.0.0.1:1. It was blocked, as your safety settings say for a guard that "
        "cannot judge. Start it, or change the host in Settings.")
    warned = GuardVerdict.unavailable("gone", when_unavailable="warn", direction="output")
    assert warned.action == "warn" and "with a warning" in warned.explanation()
    assert GuardVerdict.from_dict(verdict.to_dict()) == verdict


# --- the verdict record ------------------------------------------------------------------------


def test_verdict_names_badge_and_round_trip():
    v = GuardVerdict.from_answer("unsafe\nS1,S10", version=LG3, guard_model="ollama:llama-guard3",
                                 direction="input", probability=0.973)
    assert v.category_names == ["Violent Crimes", "Hate"]
    assert v.badge_text() == "unsafe: S1 Violent Crimes, S10 Hate (p unsafe 0.97)"
    assert "blocked" in v.explanation() and "Your message" in v.explanation()
    again = GuardVerdict.from_dict(v.to_dict())
    assert again == v
    assert GuardVerdict.from_dict({**v.to_dict(), "from_the_future": 1}) == v


def test_card_names_not_prompt_names_in_the_ui():
    v = GuardVerdict.from_answer("unsafe\nS3,S4,S11", version=LG3)
    assert v.category_names == ["Sex-Related Crimes", "Child Sexual Exploitation",
                                "Suicide & Self-Harm"]


def test_unknown_badge_says_not_understood():
    v = GuardVerdict.from_answer("safe, I think", version=LG3)
    assert v.badge_text() == "guard answer not understood"
    assert "text after 'safe'" in v.explanation()


def test_combine_picks_the_strictest():
    a = GuardVerdict.from_answer("safe", version=LG3)
    b = GuardVerdict.from_answer("unsafe\nS1", version=LG3, policy={"S1": "warn"})
    assert combine([a, b]) is b
    assert combine([]) is None
