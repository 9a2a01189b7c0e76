"""One scan of an answer: every fenced block through CodeShield's rules (regex in this
process, semgrep in one subprocess for all blocks) and Corral's own, within a time budget."""

from __future__ import annotations

import time
from collections.abc import Sequence

from core.safety.code_scan.blocks import code_blocks, fence_word, normalise_language
from core.safety.code_scan.line_rules import codeshield_findings, corral_findings
from core.safety.code_scan.records import ENGINES, CodeBlock, CodeScan, EngineResult, Finding
from core.safety.code_scan.semgrep import SUFFIXES, run_semgrep

DEFAULT_BUDGET_S = 20.0  #: for the whole scan; semgrep gets what the line rules leave


def scan_blocks(blocks: Sequence[CodeBlock], *, budget_s: float = DEFAULT_BUDGET_S,
                semgrep: bool = True) -> CodeScan:
    """Findings in ``blocks``, one per weakness and line (the most precise engine's), and
    whether the scan is complete. ``semgrep=False`` is the quick scan (line rules only, a
    few milliseconds): it is marked incomplete where semgrep had rules to run."""
    start = time.monotonic()
    results: list[EngineResult] = []
    engines = ["corral", "codeshield-regex"]
    for block in blocks:
        shield = codeshield_findings(block)
        if shield.problems and "codeshield-regex" in engines:
            engines.remove("codeshield-regex")
        every_rule = block.language is None and not fence_word(block.info)
        results += [shield, corral_findings(block, every_rule=every_rule)]
    needs_semgrep = any(b.language in SUFFIXES for b in blocks)
    if needs_semgrep and semgrep:
        outcome = run_semgrep(list(blocks), budget_s - (time.monotonic() - start))
        results.append(outcome)
        if not outcome.problems:
            engines.append("codeshield-semgrep")
    elif needs_semgrep:
        results.append(EngineResult(problems=["semgrep was not run (quick scan), so "
                                              "CodeShield's semgrep rules were not checked."]))
    findings = _one_per_weakness([f for r in results for f in r.findings])
    problems = list(dict.fromkeys(p for r in results for p in r.problems))
    notes = [n for r in results for n in r.notes]
    return CodeScan(findings, problems=problems, notes=notes, engines=engines,
                    seconds=time.monotonic() - start)


def _one_per_weakness(findings: list[Finding]) -> list[Finding]:
    """Where engines agree (same block, line and CWE), keep the most precise one's finding."""
    order = sorted(findings, key=lambda f: (f.block_index, f.line, ENGINES.index(f.engine)))
    kept: dict[tuple[int, int, str], Finding] = {}
    for f in order:
        kept.setdefault((f.block_index, f.line, f.cwe or f.rule_id), f)
    return list(kept.values())


def scan_code(code: str, language: str | None, *, block_index: int = 0,
              budget_s: float = DEFAULT_BUDGET_S, semgrep: bool = True) -> CodeScan:
    """Findings in one piece of code; ``language`` is a name or alias ('py', 'C#' ...).

    A language the scan does not know gets the rules for every language (secrets); no
    language at all gets every one of Corral's rules.
    """
    block = CodeBlock(block_index, language or "", normalise_language(language), code, 1)
    return scan_blocks([block], budget_s=budget_s, semgrep=semgrep)


def scan_markdown(text: str, *, budget_s: float = DEFAULT_BUDGET_S,
                  semgrep: bool = True) -> CodeScan:
    """Findings in every fenced code block of a Markdown answer, in one scan."""
    return scan_blocks(code_blocks(text), budget_s=budget_s, semgrep=semgrep)
