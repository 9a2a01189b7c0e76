"""What the code scan reads and reports: a fenced block, one finding, and the scan of an
answer (its findings plus whether every engine ran to the end)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ENGINES = ("codeshield-semgrep", "codeshield-regex", "corral")  #: most precise first


@dataclass(frozen=True)
class CodeBlock:
    index: int  #: 0-based, in the order the answer shows them
    info: str  #: the fence's info string as written
    language: str | None  #: normalised language, guessed when the fence names none
    code: str
    start_line: int  #: 1-based line of the first code line in the document


@dataclass(frozen=True)
class Finding:
    block_index: int  #: which fenced block of the answer (0-based)
    language: str  #: the block's language as scanned ("" when unknown)
    line: int  #: 1-based line inside the block
    rule_id: str
    title: str  #: a few words: what kind of weakness
    why: str  #: the rule's own explanation
    snippet: str = ""  #: the flagged line, trimmed
    cwe: str = ""  #: "CWE-78" ... ("" when the rule names none)
    severity: str = "warning"  #: error, warning, advice or info
    engine: str = "corral"  #: which of ENGINES found it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CodeScan(list[Finding]):
    """The findings of one scan, in block and line order, and how far the scan got.

    It is the list of findings (so code that only wants findings iterates it), plus
    ``complete``: False when an engine could not run or was cut short; ``problems`` then
    says why in sentences. A scan that is not complete is never a clean bill of health.
    """

    def __init__(self, findings: list[Finding], *, problems: list[str] | None = None,
                 notes: list[str] | None = None, engines: list[str] | None = None,
                 seconds: float = 0.0) -> None:
        super().__init__(findings)
        self.problems: list[str] = list(problems or [])
        self.notes: list[str] = list(notes or [])  #: e.g. lines semgrep could not parse
        self.engines: list[str] = list(engines or [])  #: the engines that ran to the end
        self.seconds = seconds

    @property
    def complete(self) -> bool:
        return not self.problems

    def for_block(self, index: int) -> list[Finding]:
        return [f for f in self if f.block_index == index]

    def summary(self) -> str:
        """One line for people: how many findings, and whether the scan is incomplete."""
        count = f"{len(self)} possible security problem{'s' if len(self) != 1 else ''}"
        head = count if self else "no insecure patterns found"
        if not self.complete:
            return f"scan incomplete ({head} so far): {' '.join(self.problems)}"
        return head

    def to_dict(self) -> dict[str, Any]:
        return {"complete": self.complete, "problems": self.problems, "notes": self.notes,
                "engines": self.engines, "findings": [f.to_dict() for f in self]}


@dataclass
class EngineResult:
    """What one engine found, and what stopped it from finishing (if anything)."""

    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# Short names for the weaknesses the rules name, so a finding reads as a title.
CWE_TITLES = {
    "CWE-22": "path traversal", "CWE-78": "OS command injection",
    "CWE-79": "cross-site scripting", "CWE-89": "SQL injection",
    "CWE-90": "LDAP injection", "CWE-94": "code injection", "CWE-95": "eval injection",
    "CWE-119": "out-of-bounds memory access", "CWE-120": "buffer overflow (unchecked copy)",
    "CWE-121": "stack buffer overflow", "CWE-134": "format string from a variable",
    "CWE-185": "regular expression from input", "CWE-190": "integer overflow",
    "CWE-200": "information exposure", "CWE-208": "timing attack on a secret",
    "CWE-242": "inherently dangerous function", "CWE-250": "runs with needless privileges",
    "CWE-276": "insecure default permissions", "CWE-295": "certificate checks off",
    "CWE-306": "missing authentication", "CWE-311": "sensitive data not encrypted",
    "CWE-312": "secret in clear text", "CWE-319": "unencrypted connection",
    "CWE-323": "fixed nonce or IV", "CWE-327": "broken or risky cryptography",
    "CWE-328": "weak hash", "CWE-330": "weak randomness", "CWE-331": "key too small",
    "CWE-335": "fixed random seed", "CWE-338": "weak random number generator",
    "CWE-345": "message origin not checked", "CWE-347": "unauthenticated encryption",
    "CWE-352": "cross-site request forgery", "CWE-377": "insecure temporary file",
    "CWE-477": "obsolete function", "CWE-489": "debug feature left on",
    "CWE-494": "download without integrity check", "CWE-502": "unsafe deserialization",
    "CWE-521": "weak password rules", "CWE-554": "input validation off",
    "CWE-589": "deprecated API", "CWE-590": "free of memory not on the heap",
    "CWE-601": "open redirect", "CWE-611": "XML external entities",
    "CWE-614": "cookie without Secure", "CWE-621": "variable extraction from input",
    "CWE-643": "XPath injection", "CWE-665": "improper initialization",
    "CWE-676": "potentially dangerous function", "CWE-680": "integer overflow to buffer overflow",
    "CWE-732": "permissions too open", "CWE-759": "hash without a salt",
    "CWE-770": "unbounded allocation", "CWE-798": "hard-coded secret",
    "CWE-807": "untrusted input in a security decision", "CWE-862": "missing authorization",
    "CWE-908": "uninitialized memory", "CWE-918": "server-side request forgery",
    "CWE-940": "message source not verified", "CWE-942": "permissive CORS",
    "CWE-1004": "cookie without HttpOnly", "CWE-1240": "risky cipher",
}


def title_for(cwe: str, message: str) -> str:
    """A finding's title: the weakness's short name, else the start of the rule's message."""
    if cwe in CWE_TITLES:
        return CWE_TITLES[cwe]
    first = message.strip().split(". ")[0].rstrip(".")
    return first if len(first) <= 80 else first[:77] + "..."
