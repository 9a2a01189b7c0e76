"""Line rules, checked in this process: CodeShield's regex rules (those its config enables for
CyberSecEval) and Corral's own in corral_rules.json (shell, SQL, secrets, and patterns
CodeShield's rules miss: Java, C#, Rust, C, PHP, and fallbacks where semgrep cannot parse)."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.errors import CorralError
from core.safety.code_scan.records import CodeBlock, EngineResult, Finding, title_for

RULES_PATH = Path(__file__).with_name("corral_rules.json")
USECASE = "cyberseceval"  #: CodeShield's fuller rule set, the one its own tests check
_COMMENTS = {"python": ("#",), "shell": ("#",), "ruby": ("#",), "php": ("//", "#", "/*", "*"),
             "sql": ("--", "/*", "*")}
_C_COMMENTS = ("//", "/*", "*")
#: CodeShield regex rules that fire on safe code, and the safe form they must spare
_CODESHIELD_SPARE = {"rsa-without-oaep-padding": re.compile(r'"AES/GCM/NoPadding"')}


@dataclass(frozen=True)
class Rule:
    """One regular expression, its own explanation, and the languages it applies to."""

    id: str
    languages: tuple[str, ...]  #: ("*",) for every language
    title: str
    why: str
    pattern: re.Pattern[str]
    unless: re.Pattern[str] | None
    skip_if: re.Pattern[str] | None = None  #: found anywhere in the block: rule not used
    positive: str = ""  #: an example the rule must flag (Corral's rules)
    negative: str = ""  #: a look-alike it must not flag (Corral's rules)
    cwe: str = ""
    severity: str = "warning"
    engine: str = "corral"

    def applies_to(self, language: str | None) -> bool:
        return "*" in self.languages or (language is not None and language in self.languages)

    def matches(self, line: str) -> bool:
        return bool(self.pattern.search(line)) and not (self.unless and self.unless.search(line))


@lru_cache(maxsize=4)
def load_rules(path: str | None = None) -> tuple[Rule, ...]:
    """Corral's rule set (one JSON file); a broken file is a clear error, not an empty scan."""
    source = Path(path) if path else RULES_PATH
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        rules = []
        for raw in data["rules"]:
            flags = re.IGNORECASE if "i" in raw.get("flags", "") else 0
            rules.append(Rule(
                id=raw["id"], languages=tuple(raw["languages"]), title=raw["title"],
                why=raw["why"], pattern=re.compile(raw["pattern"], flags),
                unless=re.compile(raw["unless"], flags) if raw.get("unless") else None,
                skip_if=re.compile(raw["skip_if"]) if raw.get("skip_if") else None,
                positive=raw["positive"], negative=raw["negative"], cwe=raw.get("cwe", ""),
                severity=raw.get("severity", "warning"),
            ))
    except (OSError, ValueError, KeyError, TypeError, re.error) as exc:
        raise CorralError(f"the code-scan rules in {source} cannot be used: {exc}") from exc
    return tuple(rules)


def codeshield_rules_dir() -> Path | None:
    """The rules folder inside the installed ``codeshield`` package (found, never imported:
    importing it makes a symlink inside semgrep's package)."""
    spec = importlib.util.find_spec("codeshield")
    for root in (spec.submodule_search_locations or []) if spec else []:
        rules = Path(root) / "insecure_code_detector" / "rules"
        if (rules / "config.yaml").is_file():
            return rules
    return None


class CodeShieldUnavailable(CorralError):
    """CodeShield's rule files are missing or cannot be read."""

    hint = "Install Corral's dependencies again: pip install -e ."

    def __init__(self, why: str = "are not installed") -> None:
        super().__init__(f"CodeShield's rules {why}, so its checks did not run")


def _regex_files(language: str | None) -> tuple[str, ...]:
    """CodeShield's regex files for a language, as its loader chains them."""
    if language in ("cpp", "objective_c"):
        return (language, "c", "language_agnostic")
    known = ("c", "csharp", "java", "javascript", "php", "python", "rust", "kotlin", "swift",
             "ruby", "xml")
    return (language, "language_agnostic") if language in known else ("language_agnostic",)


@lru_cache(maxsize=32)
def codeshield_patterns(language: str | None) -> tuple[Rule, ...]:
    """CodeShield's regex rules for ``language`` (None, shell, sql: the language-agnostic
    ones: keys and tokens in known formats)."""
    import yaml

    root = codeshield_rules_dir()
    if root is None:
        raise CodeShieldUnavailable()
    rules: list[Rule] = []
    try:
        config = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8"))
        enabled = config["config"][USECASE]
        for name in _regex_files(language):
            path = root / "regex" / f"{name}.yaml"
            allowed = set((enabled.get(name) or {}).get("regex", {}).get("rules") or [])
            for raw in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
                pattern_id = raw.get("pattern_id")
                if pattern_id and pattern_id not in allowed:
                    continue
                rules.append(Rule(
                    id=pattern_id or f"{name}-regex", languages=(name,),
                    title=title_for(raw["cwe_id"], raw["description"]), why=raw["description"],
                    pattern=re.compile(raw["rule"]),
                    unless=_CODESHIELD_SPARE.get(pattern_id or ""), cwe=raw["cwe_id"],
                    severity=str(raw["severity"]).lower(), engine="codeshield-regex"))
    except (OSError, ValueError, KeyError, TypeError, re.error, yaml.YAMLError) as exc:
        raise CodeShieldUnavailable(f"cannot be read ({exc})") from exc
    return tuple(rules)


def _is_directive(prefix: str) -> bool:
    """CodeShield's own test: the line up to the match is a comment or a directive."""
    text = prefix.strip()
    return text.startswith(("#", "//", "/*")) or text.endswith("*/")


def codeshield_findings(block: CodeBlock) -> EngineResult:
    """Every match of CodeShield's regex rules (all of them, not only the first per rule as
    its own analyzer reports), each at its line in the block."""
    try:
        rules = codeshield_patterns(block.language)
    except CodeShieldUnavailable as exc:
        return EngineResult(problems=[exc.sentence()])
    lines = block.code.split("\n")
    found: dict[tuple[str, int], Finding] = {}
    for rule in rules:
        for m in rule.pattern.finditer(block.code):
            number = block.code.count("\n", 0, m.start()) + 1
            start = block.code.rfind("\n", 0, m.start()) + 1
            line = lines[number - 1]
            if ((rule.id, number) in found or _is_directive(block.code[start:m.start()])
                    or (rule.unless and rule.unless.search(line))):
                continue
            found[(rule.id, number)] = _finding(block, rule, number, line)
    return EngineResult(findings=list(found.values()))


def _is_comment(line: str, language: str | None) -> bool:
    text = line.lstrip()
    if language == "shell" and text.startswith("#!"):
        return False
    return text.startswith(_COMMENTS.get(language or "", _C_COMMENTS if language else ()))


def corral_findings(block: CodeBlock, *, every_rule: bool = False,
                    rules: tuple[Rule, ...] | None = None) -> EngineResult:
    """Corral's own rules, line by line (comments skipped). ``every_rule`` applies them all
    to a block whose language is unknown; otherwise an unknown language gets only the
    rules for every language (secrets)."""
    active = [r for r in (rules or load_rules())
              if (r.applies_to(block.language) or (every_rule and block.language is None))
              and not (r.skip_if and r.skip_if.search(block.code))]
    findings: list[Finding] = []
    for number, line in enumerate(block.code.split("\n"), 1):  # lines as semgrep counts them
        line = line.rstrip("\r")
        if block.language == "shell" and line.lstrip().startswith("$ "):
            line = line.lstrip()[2:]  # a console prompt
        if not line.strip() or _is_comment(line, block.language):
            continue
        findings += [_finding(block, r, number, line) for r in active if r.matches(line)]
    return EngineResult(findings=findings)


def _finding(block: CodeBlock, rule: Rule, number: int, line: str) -> Finding:
    return Finding(block.index, block.language or "", number, rule.id, rule.title, rule.why,
                   line.strip()[:200], rule.cwe, rule.severity, rule.engine)
