"""CodeShield's semgrep rules, run by semgrep's own engine as a subprocess with a time budget,
offline: one run for all the blocks of an answer.

CodeShield's wrapper runs semgrep with ``--project-root /``, and with that flag semgrep 1.187
scans nothing; so Corral drives the engine itself, with CodeShield's rule files. The engine
is ``semgrep-core`` from the semgrep package, started under the name ``osemgrep`` (its own
command line, no Python CLI), with metrics off and no version check: nothing leaves the
machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.errors import CodeShieldUnavailable
from core.safety.code_scan.blocks import TYPESCRIPT, fence_word
from core.safety.code_scan.line_rules import codeshield_rules_dir
from core.safety.code_scan.records import CodeBlock, EngineResult, Finding, title_for

SUFFIXES = {"python": ".py", "javascript": ".js", "java": ".java", "csharp": ".cs",
            "php": ".php", "c": ".c", "cpp": ".cpp"}
_RULE_SETS = ("python", "javascript", "java", "csharp", "php", "c")  # c's rules cover cpp
#: CodeShield ships this rule but its config leaves it off; random.* for secrets is common
_EXTRA_RULES = ("python/crypto_prng_random.yaml",)
_MISSING_CWE = {"vulnerable-strcpy": "CWE-120"}  # the one CodeShield rule that names none
#: CodeShield's Java patterns "import java.net.URL" lack the ";" semgrep 1.187 requires
_JAVA_IMPORT = re.compile(r"(?m)^(import [\w.]+(?:\.\*)?)[ \t]*$")


def find_semgrep_core() -> Path | None:
    """semgrep's engine: in the installed semgrep package, else on PATH.
    CORRAL_SEMGREP_CORE names another one ("" for none)."""
    override = os.environ.get("CORRAL_SEMGREP_CORE")
    if override is not None:
        return Path(override) if override else None
    spec = importlib.util.find_spec("semgrep")
    for root in (spec.submodule_search_locations or []) if spec else []:
        core = Path(root) / "bin" / "semgrep-core"
        if core.is_file():
            return core
    found = shutil.which("semgrep-core")
    return Path(found) if found else None


def _fix_java(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _fix_java(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_java(v) for v in node]
    return _JAVA_IMPORT.sub(r"\1;", node) if isinstance(node, str) else node


@lru_cache(maxsize=1)
def rules_text() -> str:
    """CodeShield's semgrep rules for CyberSecEval, in one file, as semgrep 1.187 reads them."""
    import yaml

    root = codeshield_rules_dir()
    if root is None:
        raise CodeShieldUnavailable()
    rules: list[dict[str, Any]] = []
    try:
        for name in _RULE_SETS:
            path = root / "semgrep" / "_generated_" / f"{name}_cyberseceval.json"
            rules += json.loads(path.read_text(encoding="utf-8"))["rules"]
        for extra in _EXTRA_RULES:
            text = (root / "semgrep" / extra).read_text(encoding="utf-8")
            rules += yaml.safe_load(text)["rules"]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise CodeShieldUnavailable(f"cannot be read ({exc})") from exc
    rules = [_fix_java(r) if "java" in r.get("languages", []) else r for r in rules]
    return json.dumps({"rules": rules})


def semgrep_command(rules: str, targets: list[str]) -> list[str]:
    """The command line (argv[0] "osemgrep" selects the engine's own command line)."""
    return ["osemgrep", "scan", "--experimental", "--metrics", "off", "--disable-version-check",
            "--quiet", "--json", "--no-git-ignore", "-j", "1", "--config", rules, *targets]


def _target(block: CodeBlock) -> tuple[str, str, int]:
    """The file name, text and line offset semgrep sees for a block."""
    suffix = SUFFIXES[block.language or ""]
    if block.language == "javascript" and fence_word(block.info) in TYPESCRIPT:
        suffix = ".ts"
    if block.language == "php" and "<?php" not in block.code:
        return f"block_{block.index:03d}{suffix}", "<?php\n" + block.code, 1
    return f"block_{block.index:03d}{suffix}", block.code, 0


def run_semgrep(blocks: list[CodeBlock], budget_s: float) -> EngineResult:
    """One semgrep run over every block in a language it has rules for. Missing, failing or
    slower than ``budget_s``: the result says so in ``problems`` (never a silent clean)."""
    blocks = [b for b in blocks if b.language in SUFFIXES]
    if not blocks:
        return EngineResult()
    core = find_semgrep_core()
    if core is None or not os.access(core, os.X_OK):
        return EngineResult(problems=["semgrep is not installed, so CodeShield's semgrep "
                                      "rules did not run (pip install -e . installs it)."])
    try:
        rules = rules_text()
    except CodeShieldUnavailable as exc:
        return EngineResult(problems=[exc.sentence()])
    with tempfile.TemporaryDirectory(prefix="corral-scan-") as tmp:
        (Path(tmp) / "rules.json").write_text(rules, encoding="utf-8")
        targets: dict[str, tuple[CodeBlock, int]] = {}
        for block in blocks:
            name, text, offset = _target(block)
            (Path(tmp) / name).write_text(text, encoding="utf-8")
            targets[name] = (block, offset)
        env = dict(os.environ, SEMGREP_SEND_METRICS="off", SEMGREP_ENABLE_VERSION_CHECK="0")
        try:
            proc = subprocess.Popen(semgrep_command("rules.json", list(targets)),
                                    executable=str(core), cwd=tmp, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            return EngineResult(problems=[f"semgrep could not start ({exc.strerror or exc}), "
                                          "so CodeShield's semgrep rules did not run."])
        try:
            out, err = proc.communicate(timeout=max(budget_s, 0.0))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return EngineResult(problems=[
                f"semgrep ran past the scan's {budget_s:.3g} s budget and was stopped, so "
                "CodeShield's semgrep rules did not finish."])
    return _read_output(out, err, proc.returncode, targets)


def _read_output(out: bytes, err: bytes, code: int,
                 targets: dict[str, tuple[CodeBlock, int]]) -> EngineResult:
    try:
        report = json.loads(out)
        scanned = set(report["paths"]["scanned"])
    except (ValueError, KeyError, TypeError):
        last = (err.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
        return EngineResult(problems=[f"semgrep failed (exit code {code}: {last[:200]}), so "
                                      "CodeShield's semgrep rules did not run."])
    result = EngineResult()
    seen: set[tuple[int, int, str]] = set()
    for hit in report.get("results", []):
        block, offset = targets.get(hit.get("path", ""), (None, 0))
        line = int(hit.get("start", {}).get("line", 0)) - offset
        rule_id = str(hit.get("check_id", ""))
        if block is None or line < 1 or (block.index, line, rule_id) in seen:
            continue
        seen.add((block.index, line, rule_id))
        extra = hit.get("extra", {})
        cwe = str(extra.get("metadata", {}).get("cwe_id") or _MISSING_CWE.get(rule_id, ""))
        message = " ".join(str(extra.get("message", "")).split())
        text = block.code.split("\n")[line - 1] if line <= block.code.count("\n") + 1 else ""
        result.findings.append(Finding(
            block.index, block.language or "", line, rule_id, title_for(cwe, message), message,
            text.strip()[:200], cwe, str(extra.get("severity", "warning")).lower(),
            "codeshield-semgrep"))
    for name, (block, _offset) in targets.items():
        if name not in scanned:
            result.problems.append(f"semgrep skipped block {block.index + 1}.")
    for error in report.get("errors", []):
        kind, number = _describe(error, targets)
        if error.get("level") != "error" and kind in ("PartialParsing", "Syntax error"):
            result.notes.append(f"semgrep could only partly parse block {number}; the line "
                                "rules still read all of it.")
            continue
        first = (str(error.get("message", "")).strip().splitlines() or [kind])[0]
        where = f" in block {number}" if number else ""
        result.problems.append(f"semgrep reported {kind}{where}: {first[:200]}.")
    if code not in (0, 1) and not result.problems:
        result.problems.append(f"semgrep exited with code {code}.")
    return result


def _describe(error: dict[str, Any],
              targets: dict[str, tuple[CodeBlock, int]]) -> tuple[str, int | None]:
    """A semgrep error's kind, and the 1-based number of the block it is about (or None)."""
    kind = error.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    block = targets.get(str(error.get("path", "")), (None, 0))[0]
    return str(kind), (block.index + 1 if block else None)
