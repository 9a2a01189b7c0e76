"""Fenced code blocks of a Markdown answer, and the language of each: named by the fence, or
guessed from the code."""

from __future__ import annotations

import re

from core.safety.code_scan.records import CodeBlock

#: what `corral guard --scan-code --language` takes (CodeShield's languages and Corral's own)
LANGUAGES = ("python", "javascript", "c", "cpp", "java", "csharp", "php", "rust", "shell", "sql")
#: languages CodeShield has line rules for too (no semgrep rules)
MORE_LANGUAGES = ("kotlin", "swift", "ruby", "objective_c", "xml")

_ALIASES = {
    "python": ("py", "python", "python3", "py3", "ipython", "pycon", "python2"),
    "javascript": ("js", "javascript", "jsx", "ts", "typescript", "tsx", "node", "nodejs",
                   "mjs", "cjs"),
    "shell": ("sh", "bash", "shell", "zsh", "ksh", "console", "shell-session", "shellsession",
              "dockerfile", "docker"),
    "c": ("c", "h"),
    "cpp": ("cpp", "c++", "cxx", "cc", "hpp", "hxx", "h++"),
    "java": ("java",),
    "csharp": ("cs", "csharp", "c#", "dotnet"),
    "php": ("php", "php3", "php4", "php5", "php7", "php8"),
    "rust": ("rs", "rust"),
    "sql": ("sql", "mysql", "postgresql", "postgres", "psql", "plsql", "pl/sql", "tsql",
            "t-sql", "sqlite", "pgsql", "mssql"),
    "kotlin": ("kt", "kts", "kotlin"),
    "swift": ("swift",),
    "ruby": ("rb", "ruby"),
    "objective_c": ("objc", "objective-c", "objectivec", "objective_c", "obj-c"),
    "xml": ("xml", "xsd", "xsl", "xslt", "plist", "web.config"),
}
_LANGUAGE_OF = {alias: lang for lang, names in _ALIASES.items() for alias in names}
TYPESCRIPT = frozenset({"ts", "typescript", "tsx"})


def normalise_language(name: str | None) -> str | None:
    """The scan's name for a fence's language ('py', 'C#', '{.bash}' ...), or None."""
    words = (name or "").strip().lower().split()
    key = words[0].lstrip("{.").rstrip("}") if words else ""
    return _LANGUAGE_OF.get(key)


def fence_word(info: str) -> str:
    words = info.strip().lower().split()
    return words[0].lstrip("{.").rstrip("}") if words else ""


# Most specific first: PHP and C++ before C, Rust/Java/C# before the looser Python and JS.
_GUESSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("php", re.compile(r"<\?php\b")),
    ("cpp", re.compile(r"^\s*#include\s*<(iostream|string|vector|memory|map|fstream|sstream)>"
                       r"|\bstd::\w|\bcout\s*<<|\bnamespace\s+\w+\s*\{|\btemplate\s*<", re.M)),
    ("c", re.compile(r"^\s*#include\s*[<\"]|\bint\s+main\s*\(", re.M)),
    ("rust", re.compile(r"^\s*(pub\s+)?fn\s+\w+\s*[(<]|\blet\s+mut\s|^\s*use\s+std::|"
                        r"\bprintln!\(|\bimpl\s+\w+", re.M)),
    ("java", re.compile(r"^\s*import\s+java(x)?\.|\bSystem\.out\.print|"
                        r"\bpublic\s+static\s+void\s+main\s*\(\s*String", re.M)),
    ("csharp", re.compile(r"^\s*using\s+System(\.\w+)*\s*;|\bConsole\.Write(Line)?\s*\(|"
                          r"^\s*namespace\s+[\w.]+\s*;?\s*$", re.M)),
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
        # a fence that names a language Corral does not know ("go", "text") is not guessed
        lang = normalise_language(info) if info else guess_language(code)
        blocks.append(CodeBlock(len(blocks), info, lang, code, i + 2))
        i = j + 1
    return blocks
