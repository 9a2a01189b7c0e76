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

from core.errors import CodeShieldUnavailable, CorralError
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
    only_if: re.Pattern[str] | None = None  #: must be found in the block, or the rule is not used
    span: int = 0  #: following lines the pattern may read while the line's brackets are open
    unless_near: re.Pattern[str] | None = None  #: found in the lines around: spared
    near: tuple[int, int] = (0, 0)  #: lines before and after the match that unless_near reads
    then: str = ""  #: must match later in its scope; {name} is the match's group "name"
    unless_before: str = ""  #: found earlier in the block ({name} as for then): spared
    positive: str = ""  #: an example the rule must flag (Corral's rules)
    negative: str = ""  #: a look-alike it must not flag (Corral's rules)
    cwe: str = ""
    severity: str = "warning"
    engine: str = "corral"

    def applies_to(self, language: str | None) -> bool:
        return "*" in self.languages or (language is not None and language in self.languages)

    def matches(self, line: str) -> bool:
        return bool(self.pattern.search(line)) and not (self.unless and self.unless.search(line))

    def used_for(self, code: str) -> bool:
        """Whether the block's code lets the rule apply at all (skip_if, only_if)."""
        return not (self.skip_if and self.skip_if.search(code)) and not (
            self.only_if and not self.only_if.search(code))

    def matches_at(self, lines: list[str], i: int) -> bool:
        """Whether the rule flags line ``i`` of the block, reading the lines around it where
        the rule asks for them (a call split over lines, attributes above or below, a later
        use of the name the line declares)."""
        line = lines[i]
        text = _statement(lines, i, self.span) if self.span else line
        m = self.pattern.search(text)
        if not m or m.start() >= len(line) or (self.unless and self.unless.search(text)):
            return False
        if self.unless_near:
            before, after = self.near
            if self.unless_near.search("\n".join(lines[max(i - before, 0):i + after + 1])):
                return False
        name = m.groupdict().get("name") or ""
        if self.unless_before and name and _then_pattern(self.unless_before, name).search(
                "\n".join(lines[:i])):
            return False
        if self.then:
            later = "\n".join(_rest_of_scope(lines, i))
            return bool(name) and _then_pattern(self.then, name).search(later) is not None
        return True


def _statement(lines: list[str], i: int, span: int) -> str:
    """Line ``i`` and the lines after it while its brackets are open (at most ``span``)."""
    text = lines[i]
    depth = text.count("(") + text.count("{") - text.count(")") - text.count("}")
    j = i
    while depth > 0 and j < min(i + span, len(lines) - 1):
        j += 1
        text += "\n" + lines[j]
        depth += lines[j].count("(") + lines[j].count("{")
        depth -= lines[j].count(")") + lines[j].count("}")
    return text


def _rest_of_scope(lines: list[str], i: int) -> list[str]:
    """The lines after line ``i`` up to the brace that closes the block it is in (a name
    declared there means something else after it)."""
    depth = 0
    rest = []
    for line in lines[i + 1:]:
        depth += line.count("{") - line.count("}")
        if depth < 0:
            break
        rest.append(line)
    return rest


@lru_cache(maxsize=256)
def _then_pattern(template: str, name: str) -> re.Pattern[str]:
    return re.compile(template.replace("{name}", re.escape(name)))


@lru_cache(maxsize=4)
def load_rules(path: str | None = None) -> tuple[Rule, ...]:
    """Corral's rule set (one JSON file); a broken file is a clear error, not an empty scan."""
    source = Path(path) if path else RULES_PATH
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        rules = []
        for raw in data["rules"]:
            flags = re.IGNORECASE if "i" in raw.get("flags", "") else 0
            rule = Rule(
                id=raw["id"], languages=tuple(raw["languages"]), title=raw["title"],
                why=raw["why"], pattern=re.compile(raw["pattern"], flags),
                unless=re.compile(raw["unless"], flags) if raw.get("unless") else None,
                skip_if=re.compile(raw["skip_if"]) if raw.get("skip_if") else None,
                only_if=re.compile(raw["only_if"]) if raw.get("only_if") else None,
                span=int(raw.get("span", 0)),
                unless_near=re.compile(raw["unless_near"]) if raw.get("unless_near") else None,
                near=(int(raw.get("near", (0, 0))[0]), int(raw.get("near", (0, 0))[1])),
                then=raw.get("then", ""), unless_before=raw.get("unless_before", ""),
                positive=raw["positive"], negative=raw["negative"], cwe=raw.get("cwe", ""),
                severity=raw.get("severity", "warning"),
            )
            for template in (t for t in (rule.then, rule.unless_before) if t):
                if "name" not in rule.pattern.groupindex or "{name}" not in template:
                    raise ValueError(f"rule {rule.id}: 'then' and 'unless_before' need the "
                                     "group (?P<name>...) in the pattern and {name} in theirs")
                _then_pattern(template, "x")  # a broken one fails here, not mid-scan
            rules.append(rule)
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
              and r.used_for(block.code)]
    lines = [line.rstrip("\r") for line in block.code.split("\n")]  # as semgrep counts them
    if block.language == "shell":
        lines = [line.lstrip()[2:] if line.lstrip().startswith("$ ") else line
                 for line in lines]  # a console prompt
    findings: list[Finding] = []
    for i, line in enumerate(lines):
        if not line.strip() or _is_comment(line, block.language):
            continue
        findings += [_finding(block, r, i + 1, line) for r in active if r.matches_at(lines, i)]
    return EngineResult(findings=findings)


def _finding(block: CodeBlock, rule: Rule, number: int, line: str) -> Finding:
    return Finding(block.index, block.language or "", number, rule.id, rule.title, rule.why,
                   line.strip()[:200], rule.cwe, rule.severity, rule.engine)
