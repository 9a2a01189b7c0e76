"""The insecure-code scan: fenced code blocks of an answer checked with Purple Llama's
CodeShield rules (regex and semgrep, offline) and Corral's own (shell, SQL, secrets, and
what CodeShield misses), in one scan per answer with a time budget.

A scan that could not run every engine to the end says so (``CodeScan.complete`` is False,
``problems`` says why): it is never reported as clean.
"""

from core.safety.code_scan.blocks import (
    LANGUAGES,
    MORE_LANGUAGES,
    code_blocks,
    guess_language,
    normalise_language,
)
from core.safety.code_scan.line_rules import RULES_PATH, Rule, load_rules
from core.safety.code_scan.records import CodeBlock, CodeScan, Finding
from core.safety.code_scan.scan import DEFAULT_BUDGET_S, scan_blocks, scan_code, scan_markdown

__all__ = [
    "DEFAULT_BUDGET_S", "LANGUAGES", "MORE_LANGUAGES", "RULES_PATH", "CodeBlock", "CodeScan",
    "Finding", "Rule", "code_blocks", "guess_language", "load_rules", "normalise_language",
    "scan_blocks", "scan_code", "scan_markdown",
]
