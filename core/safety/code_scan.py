"""The insecure-code scan: fenced code blocks in an answer checked against the rules in
code_rules.json (Python, JavaScript, shell, C, SQL, and secrets in any language)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.errors import CorralError

RULES_PATH = Path(__file__).with_name("code_rules.json")
LANGUAGES = ("python", "javascript", "shell", "c", "sql")

_ALIASES = {
    "python": ("py", "python", "python3", "py3", "ipython", "pycon", "python2"),
    "javascript": ("js", "javascript", "jsx", "ts", "typescript", "tsx", "node", "nodejs",
                   "mjs", "cjs"),
    "shell": ("sh", "bash", "shell", "zsh", "ksh", "console", "shell-session", "shellsession",
              "dockerfile", "docker"),
    "c": ("c", "h", "cpp", "c++", "cxx", "cc", "hpp", "objc", "objective-c"),
    "sql": ("sql", "mysql", "postgresql", "postgres", "psql", "plsql", "pl/sql", "tsql",
            "t-sql", "sqlite", "pgsql", "mssql"),
}
_LANGUAGE_OF = {alias: lang for lang, names in _ALIASES.items() for alias in names}
_LINE_COMMENTS = {"python": ("#",), "shell": ("#",), "javascript": ("//", "/*", "*"),
                  "c": ("//", "/*", "*"), "sql": ("--", "/*", "*")}


@dataclass(frozen=True)
class Rule:
    id: str
    languages: tuple[str, ...]  #: ("*",) for every language
    title: str
    why: str
    pattern: re.Pattern[str]
    unless: re.Pattern[str] | None
    positive: str  #: an example the rule must flag
    negative: str  #: a look-alike it must not flag

    def applies_to(self, language: str | None) -> bool:
        return "*" in self.languages or (language is not None and language in self.languages)

    def matches(self, line: str) -> bool:
        return bool(self.pattern.search(line)) and not (self.unless and self.unless.search(line))


@dataclass(frozen=True)
class Finding:
    block_index: int  #: which fenced block of the answer (0-based)
    language: str  #: the block's language as scanned ("" when unknown)
    line: int  #: 1-based line inside the block
    rule_id: str
    title: str
    why: str
    snippet: str = ""  #: the flagged line, trimmed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CodeBlock:
    index: int
    info: str  #: the fence's info string as written
    language: str | None  #: normalised language, guessed when the fence names none
    code: str
    start_line: int  #: 1-based line of the first code line in the document


def normalise_language(name: str | None) -> str | None:
    key = (name or "").strip().lower().split()[0] if (name or "").strip() else ""
    key = key.lstrip("{.").rstrip("}")
    return _LANGUAGE_OF.get(key)


def _flags(text: str) -> int:
    return re.IGNORECASE if "i" in text else 0


@lru_cache(maxsize=4)
def load_rules(path: str | None = None) -> tuple[Rule, ...]:
    """The rule set (one JSON file); a broken file is a clear error, not a silent empty scan."""
    source = Path(path) if path else RULES_PATH
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        rules = []
        for raw in data["rules"]:
            flags = _flags(raw.get("flags", ""))
            rules.append(Rule(
                id=raw["id"], languages=tuple(raw["languages"]), title=raw["title"],
                why=raw["why"], pattern=re.compile(raw["pattern"], flags),
                unless=re.compile(raw["unless"], flags) if raw.get("unless") else None,
                positive=raw["positive"], negative=raw["negative"],
            ))
    except (OSError, ValueError, KeyError, TypeError, re.error) as exc:
        raise CorralError(f"the code-scan rules in {source} cannot be used: {exc}") from exc
    return tuple(rules)


_GUESSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("c", re.compile(r"^\s*#include\s*[<\"]|\bint\s+main\s*\(", re.M)),
    ("python", re.compile(r"^#!.*python|^\s*(def \w+\(|import \w|from [\w.]+ import |print\()",
                          re.M)),
    ("shell", re.compile(r"^#!.*\b(ba|z|k)?sh\b|^\s*(\$ |sudo |apt(-get)? |curl |wget |export "
                         r"\w+=|chmod |echo )", re.M)),
    ("javascript", re.compile(r"^\s*(const|let|var) \w+\s*=|\bfunction\s*\w*\s*\(|"
                              r"\brequire\(|console\.log\(|=>\s*\{", re.M)),
    ("sql", re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|GRANT|DROP|EXEC)\b",
                       re.M | re.I)),
)


def guess_language(code: str) -> str | None:
    for lang, pattern in _GUESSES:
        if pattern.search(code):
            return lang
    return None


_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def code_blocks(markdown: str) -> list[CodeBlock]:
    """Fenced code blocks (``` or ~~~, any indent, as in lists); an unclosed fence runs to
    the end, as CommonMark says."""
    blocks: list[CodeBlock] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or (m["fence"][0] == "`" and "`" in m["info"]):
            i += 1
            continue
        fence, indent, info = m["fence"], len(m["indent"]), m["info"].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            close = _FENCE.match(lines[j])
            if (close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence)
                    and not close["info"].strip()):
                break
            line = lines[j]
            strip = min(indent, len(line) - len(line.lstrip(" ")))
            body.append(line[strip:])
            j += 1
        code = "\n".join(body)
        lang = normalise_language(info) if info else None
        if lang is None:
            lang = guess_language(code)
        blocks.append(CodeBlock(len(blocks), info, lang, code, i + 2))
        i = j + 1
    return blocks


def _is_comment(line: str, language: str | None) -> bool:
    text = line.lstrip()
    if language == "shell" and text.startswith("#!"):
        return False
    return any(text.startswith(p) for p in _LINE_COMMENTS.get(language or "", ()))


def scan_code(code: str, language: str | None, *, block_index: int = 0,
              rules: tuple[Rule, ...] | None = None) -> list[Finding]:
    """Findings in one piece of code; ``language`` is a name or alias ('py', 'bash' ...).

    A language Corral has no rules for gets the language-independent rules (secrets); no
    language at all (and none guessed) gets every rule.
    """
    lang = normalise_language(language) if language else None
    if language and lang is None:
        active = [r for r in (rules or load_rules()) if "*" in r.languages]
    else:
        active = [r for r in (rules or load_rules()) if lang is None or r.applies_to(lang)]
    findings: list[Finding] = []
    for number, line in enumerate(code.splitlines(), 1):
        if lang == "shell" and line.lstrip().startswith("$ "):
            line = line.lstrip()[2:]  # a console prompt
        if not line.strip() or _is_comment(line, lang):
            continue
        for rule in active:
            if rule.matches(line):
                findings.append(Finding(block_index, lang or "", number, rule.id, rule.title,
                                        rule.why, line.strip()[:200]))
    return findings


def scan_markdown(text: str) -> list[Finding]:
    """Findings in every fenced code block of a Markdown answer, block by block."""
    findings: list[Finding] = []
    for block in code_blocks(text):
        findings += scan_code(block.code, block.language, block_index=block.index)
    return findings
