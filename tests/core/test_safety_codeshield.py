"""The scan against CodeShield's own test cases (they ship in its package): every positive
case found, no negative case flagged; semgrep really runs, offline; and when semgrep is
missing, fails or runs past its budget, the scan says it is incomplete, never clean."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from core.safety.code_scan import CodeBlock, scan_blocks, scan_code
from core.safety.code_scan.line_rules import codeshield_rules_dir
from core.safety.code_scan.semgrep import find_semgrep_core, semgrep_command

RULES = codeshield_rules_dir()
if RULES is None:  # a core dependency: its absence is a broken install, never a skip
    pytest.fail("codeshield is not installed: pip install -e \".[test,fast]\"", pytrace=False)


def _package_cases() -> list[tuple[str, str, str, int]]:
    """(test file, language, code, expected count or line) from CodeShield's test modules,
    read as data (importing them would import CodeShield's detector)."""
    cases = []
    for path in sorted((RULES.parent / "tests").glob("test_*.py")):
        match = re.match(r"test_(\w+?)_(insecure_)?code_detector$", path.stem)
        for node in ast.parse(path.read_text()).body:
            target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
            if not isinstance(target, ast.Name) or not target.id.endswith("TEST_CASES"):
                continue
            language = match[1] if match else target.id.split("_")[0].lower()
            for case in ast.literal_eval(node.value):
                cases.append((path.name, language, case[0], case[1]))
    return cases


CASES = _package_cases()


@pytest.fixture(scope="module")
def package_scan():
    """All of CodeShield's test cases, one block each, in one scan."""
    blocks = [CodeBlock(i, lang, lang, code, 1) for i, (_, lang, code, _) in enumerate(CASES)]
    return scan_blocks(blocks, budget_s=120)


def test_the_package_ships_its_cases():
    languages = {lang for _, lang, _, _ in CASES}
    assert len(CASES) >= 200
    assert {"c", "cpp", "csharp", "java", "javascript", "php", "python", "rust"} <= languages


def test_every_positive_case_is_found_and_no_negative_case_flagged(package_scan):
    assert package_scan.complete, package_scan.problems  # every rule loaded, every block read
    wrong = []
    for i, (name, lang, code, expected) in enumerate(CASES):
        lines = {f.line for f in package_scan.for_block(i)}
        if name == "test_functional.py":  # these give the line the finding must be on
            ok = expected in lines
        else:
            ok = bool(lines) if expected else not lines
        if not ok:
            wrong.append((lang, code[:60], expected, sorted(lines)))
    assert not wrong


# --- the semgrep rules' own annotated tests ("# ruleid: X" / "# ok: X" above a line) --------

_SUFFIX = {".py": "python", ".c": "c", ".js": "javascript", ".php": "php"}
_NOTE = re.compile(r"\b(ruleid|ok)\s*:\s*([\w-]+)")
# Where CodeShield's annotations and its own rules disagree, and why these are left out:
_NOT_ENABLED = {"mcf-get-cstring-result-ignored"}  # Meta-internal API; its config leaves it off
_STALE = {("sql_injection_cursor_execute.py", "cursor.execute(sql_query)")}  # a parameter; the
# rule needs the query built by % / + / format above it, so no semgrep version flags this


def _annotated_files() -> list[Path]:
    root = RULES / "semgrep"
    return sorted(p for p in root.rglob("*") if p.suffix in _SUFFIX
                  and "_generated_" not in p.parts and "rule_gen" not in p.parts)


def test_semgrep_rule_examples(tmp_path):
    files = _annotated_files()
    blocks = [CodeBlock(i, _SUFFIX[p.suffix], _SUFFIX[p.suffix], p.read_text(), 1)
              for i, p in enumerate(files)]
    scan = scan_blocks(blocks, budget_s=120)
    assert scan.complete, scan.problems
    missed, flagged, checked = [], [], 0
    for i, path in enumerate(files):
        lines = path.read_text().split("\n")
        for k, line in enumerate(lines):
            note = _NOTE.search(line)
            if not note or note[2] in _NOT_ENABLED:
                continue
            target = k + 1
            while _NOTE.search(lines[target]):
                target += 1
            code = lines[target].strip()
            on_line = [f for f in scan.for_block(i) if f.line == target + 1]
            checked += 1
            if note[1] == "ruleid" and not on_line and (path.name, code) not in _STALE:
                missed.append((path.name, code))
            # an "ok" line: neither the rule it names nor Corral's rules may flag it (some of
            # CodeShield's regex rules flag them anyway, e.g. fetch('http://localhost'))
            if note[1] == "ok" and [f for f in on_line if f.engine != "codeshield-regex"]:
                flagged.append((path.name, code, [f.rule_id for f in on_line]))
    assert checked >= 150
    assert not missed and not flagged


# --- semgrep itself -------------------------------------------------------------------------


def test_semgrep_really_runs():
    scan = scan_code("import jsonpickle\nobj = jsonpickle.decode(request.data)\n", "python")
    # only CodeShield's semgrep rule knows jsonpickle: no line rule could have found this
    assert [(f.line, f.rule_id, f.engine) for f in scan] == [
        (2, "unsafe-json-pickle-use", "codeshield-semgrep")]
    assert scan.complete and "codeshield-semgrep" in scan.engines


def test_semgrep_runs_with_metrics_off_no_version_check_and_no_project_root() -> None:
    command = semgrep_command("rules.json", ["a.py"])
    assert command[command.index("--metrics") + 1] == "off"
    assert "--disable-version-check" in command
    # CodeShield's wrapper passes --project-root /, with which semgrep 1.187 scans nothing
    assert "--project-root" not in command


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (CI installs it)")
def test_semgrep_opens_no_network_socket(tmp_path):
    from core.safety.code_scan.semgrep import rules_text

    (tmp_path / "rules.json").write_text(rules_text())
    (tmp_path / "a.py").write_text("import os\nos.system(cmd)\n")
    trace = tmp_path / "trace.txt"
    command = semgrep_command("rules.json", ["a.py"])
    subprocess.run(["strace", "-f", "-e", "trace=socket,connect", "-o", str(trace),
                    "bash", "-c", f'exec -a osemgrep "{find_semgrep_core()}" "$@"', "x",
                    *command[1:]], cwd=tmp_path, capture_output=True, check=True, timeout=120)
    # local AF_UNIX sockets (a name-service lookup on some machines) are not the network
    assert not re.search(r"AF_INET6?\b", trace.read_text())


def _fake_semgrep(tmp_path: Path, body: str) -> Path:
    fake = tmp_path / "semgrep-core"
    fake.write_text("#!/bin/sh\n" + body + "\n")
    fake.chmod(0o755)
    return fake


PY = "import os\nos.system('ls ' + folder)\n"


def test_missing_semgrep_is_an_incomplete_scan(monkeypatch):
    monkeypatch.setenv("CORRAL_SEMGREP_CORE", "")
    scan = scan_code(PY, "python")
    assert not scan.complete and "not installed" in scan.problems[0]
    assert [f.line for f in scan] == [2]  # what the line rules found is still shown
    assert "codeshield-semgrep" not in scan.engines


def test_failing_semgrep_is_an_incomplete_scan(tmp_path, monkeypatch):
    fake = _fake_semgrep(tmp_path, "echo 'Fatal error: out of memory' >&2; exit 2")
    monkeypatch.setenv("CORRAL_SEMGREP_CORE", str(fake))
    scan = scan_code(PY, "python")
    assert not scan.complete and "semgrep failed" in scan.problems[0]
    assert "out of memory" in scan.problems[0]


def test_semgrep_past_its_budget_is_stopped_and_the_scan_says_so(tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    # a semgrep that hangs, with a child of its own: both must be gone when the scan returns
    fake = _fake_semgrep(tmp_path, f"sleep 300 & echo $$ $! > {pids}; wait")
    monkeypatch.setenv("CORRAL_SEMGREP_CORE", str(fake))
    scan = scan_code(PY, "python", budget_s=2.0)
    assert not scan.complete and "budget" in scan.summary()
    assert [f.line for f in scan] == [2]
    for pid in map(int, pids.read_text().split()):
        for _ in range(50):  # the kill is sent; reaping an orphan takes a moment
            if not Path(f"/proc/{pid}").exists() or "Z" in _state(pid):
                break
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


def test_a_budget_already_spent_still_reports_rather_than_waits():
    scan = scan_code(PY, "python", budget_s=0.0)  # the real semgrep, and no time for it
    assert not scan.complete and "budget" in scan.problems[0] and [f.line for f in scan] == [2]


def test_missing_codeshield_rules_are_an_incomplete_scan(monkeypatch):
    from core.safety.code_scan import line_rules, semgrep

    for module in (line_rules, semgrep):
        monkeypatch.setattr(module, "codeshield_rules_dir", lambda: None)
    line_rules.codeshield_patterns.cache_clear()
    semgrep.rules_text.cache_clear()
    try:
        scan = scan_code(PY, "python")
    finally:
        line_rules.codeshield_patterns.cache_clear()
        semgrep.rules_text.cache_clear()
    assert not scan.complete and scan.engines == ["corral"]
    assert "CodeShield's rules are not installed" in scan.problems[0]
    assert [f.rule_id for f in scan] == ["py-os-system-format"]  # Corral's own still run
