"""The code scan as a user meets it: each insecure line of a realistic answer flagged with its
CWE and rule, at its line within its block; careful code in the same languages left alone;
Corral's own rules each flag their example and spare its look-alike; `corral guard
--scan-code` reports block_index, line, cwe, rule_id and severity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import CorralError
from core.safety.code_scan import (
    LANGUAGES,
    RULES_PATH,
    CodeBlock,
    code_blocks,
    guess_language,
    load_rules,
    normalise_language,
    scan_code,
    scan_markdown,
)
from core.safety.code_scan.line_rules import corral_findings

DATA = Path(__file__).parent / "data" / "code_scan"
RULES = load_rules()


@pytest.fixture(scope="module")
def insecure():
    """One scan of an answer with 8 blocks in 8 languages (one semgrep run for all)."""
    return scan_markdown((DATA / "insecure_answer.md").read_text())


@pytest.fixture(scope="module")
def careful():
    return scan_markdown((DATA / "careful_answer.md").read_text())


# block, line within the block, CWE: what a reviewer would mark in insecure_answer.md
EXPECTED = {
    0: {3: "CWE-798", 6: "CWE-94", 7: "CWE-94", 8: "CWE-502", 9: "CWE-502", 10: "CWE-78",
        11: "CWE-328", 12: "CWE-338", 13: "CWE-78"},  # python
    1: {3: "CWE-78", 4: "CWE-95", 5: "CWE-79"},  # javascript
    2: {7: "CWE-330", 8: "CWE-330", 9: "CWE-327", 10: "CWE-327", 11: "CWE-78"},  # java
    3: {7: "CWE-327", 8: "CWE-327", 9: "CWE-78", 10: "CWE-78", 11: "CWE-502",
        12: "CWE-502"},  # csharp
    4: {3: "CWE-94", 4: "CWE-78", 5: "CWE-327"},  # php
    5: {4: "CWE-78", 5: "CWE-676"},  # rust
    6: {6: "CWE-242", 7: "CWE-120", 8: "CWE-120", 9: "CWE-78", 10: "CWE-338"},  # c
    7: {5: "CWE-120"},  # cpp
}


def test_every_insecure_line_is_flagged_with_its_cwe(insecure):
    assert insecure.complete, insecure.problems
    found = {(f.block_index, f.line, f.cwe) for f in insecure}
    missing = [(b, line, cwe) for b, lines in EXPECTED.items() for line, cwe in lines.items()
               if (b, line, cwe) not in found]
    assert not missing


def test_findings_say_where_and_what(insecure):
    blocks = code_blocks((DATA / "insecure_answer.md").read_text())
    assert [b.language for b in blocks] == ["python", "javascript", "java", "csharp", "php",
                                            "rust", "c", "cpp"]
    for f in insecure:
        code_line = blocks[f.block_index].code.split("\n")[f.line - 1]
        assert f.snippet == code_line.strip()[:200]  # the line within its block, not the file
        assert f.rule_id and f.title and f.why and f.severity
        assert f.engine in ("codeshield-semgrep", "codeshield-regex", "corral")
    strcpy = [f for f in insecure.for_block(6) if f.line == 7]
    assert [(f.rule_id, f.engine) for f in strcpy] == [("vulnerable-strcpy",
                                                        "codeshield-semgrep")]


def test_one_finding_per_weakness_and_line(insecure):
    keys = [(f.block_index, f.line, f.cwe) for f in insecure]
    assert len(keys) == len(set(keys))  # strcpy: CodeShield's regex and semgrep agree: once


def test_careful_code_in_every_language_is_clean(careful):
    assert careful.complete, careful.problems
    assert len(code_blocks((DATA / "careful_answer.md").read_text())) == 10
    assert [(f.block_index, f.line, f.rule_id) for f in careful] == []


# --- Corral's own rules ---------------------------------------------------------------------


def _langs(rule):
    return LANGUAGES if "*" in rule.languages else rule.languages


def _hits(rule, code, lang):
    block = CodeBlock(0, lang, lang, code, 1)
    return {f.rule_id for f in corral_findings(block, rules=(rule,)).findings}


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_rule_flags_its_positive_and_spares_its_negative(rule):
    for lang in _langs(rule):
        assert rule.id in _hits(rule, rule.positive, lang), (rule.id, lang)
        assert rule.id not in _hits(rule, rule.negative, lang), (rule.id, lang)


def test_rule_file_is_complete():
    data = json.loads(RULES_PATH.read_text())
    ids = [r["id"] for r in data["rules"]]
    assert len(ids) == len(set(ids))
    for raw in data["rules"]:
        for key in ("title", "why", "pattern", "positive", "negative", "languages", "cwe"):
            assert raw[key], (raw["id"], key)
    covered = {lang for r in RULES for lang in r.languages}
    assert {"shell", "sql", "java", "csharp", "rust", "php", "c", "cpp", "*"} <= covered


def _lines(rule_id, code, lang):
    """The lines (1-based) where one of Corral's rules flags ``code``."""
    rule = next(r for r in RULES if r.id == rule_id)
    block = CodeBlock(0, lang, lang, code, 1)
    return sorted(f.line for f in corral_findings(block, rules=(rule,)).findings)


def test_a_call_split_over_lines_is_read_whole_and_flagged_where_it_starts():
    code = ("cur.execute(\n"
            "    \"DELETE FROM jobs WHERE owner = '%s'\" %\n"
            "    owner)\n"
            "cur.execute(\n"
            "    \"DELETE FROM jobs WHERE owner = ?\",\n"
            "    (owner,))\n")
    assert _lines("py-sql-format", code, "python") == [1]
    c = "buf = malloc(sizeof(struct row) *\n             nrows);\nkeep = malloc(64);\n"
    assert _lines("c-alloc-size-overflow", c, "c") == [1]


def test_a_declared_buffer_is_flagged_only_when_its_own_scope_overfills_it():
    code = ("void a(const char *s)\n{\n    char tmp[16];\n    strncpy(tmp, s, sizeof tmp - 1);\n}\n"
            "void b(const char *s)\n{\n    char tmp[16];\n    strcat(tmp, s);\n}\n"
            "void c(const char *s)\n{\n    char out[8];\n    sprintf(out, \"%d\", 7);\n}\n")
    assert _lines("c-stack-buffer-overflow", code, "c") == [8]  # b's tmp, not a's, not out
    freed = "void f(void)\n{\n    char tmp[16];\n    use(tmp);\n}\nvoid g(char *tmp)\n{\n    free(tmp);\n}\n"
    assert _lines("c-free-stack-array", freed, "c") == []  # g's tmp is another name


def test_a_bound_checked_before_the_allocation_spares_it():
    checked = "if (count > MAX_ROWS)\n    return NULL;\nrows = malloc(count * sizeof *rows);\n"
    assert _lines("c-alloc-size-overflow", checked, "c") == []
    other = "if (len > MAX_ROWS)\n    return NULL;\nrows = malloc(count * sizeof *rows);\n"
    assert _lines("c-alloc-size-overflow", other, "c") == [3]  # the check is on another name


def test_attributes_around_an_action_are_read():
    below = "[HttpPost]\n[ValidateAntiForgeryToken]\npublic IActionResult Save(Form f) => View();\n"
    above = "[ValidateAntiForgeryToken]\n[HttpPost]\npublic IActionResult Save(Form f) => View();\n"
    bare = "[HttpDelete]\npublic IActionResult Drop(int id) => View();\n"
    assert _lines("cs-csrf-no-antiforgery", below + above, "csharp") == []
    assert _lines("cs-csrf-no-antiforgery", bare, "csharp") == [1]


def test_a_rule_can_need_an_import_in_the_block():
    call = "popen(\"grep \" + pattern + \" log.txt\")\n"
    assert _lines("py-os-system-imported", "from os import popen\n" + call, "python") == [2]
    assert _lines("py-os-system-imported", "from subprocess import run\n" + call, "python") == []


def test_a_rule_with_then_but_no_name_group_is_refused(tmp_path):
    raw = {"id": "x", "languages": ["c"], "title": "t", "why": "w", "pattern": r"char \w+\[",
           "then": r"free\({name}\)", "positive": "p", "negative": "n"}
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"version": 2, "rules": [raw]}))
    with pytest.raises(CorralError, match="name"):
        load_rules(str(path))


def test_shell_sql_and_secrets_stay_corrals():
    answer = ("```bash\ncurl -sSL https://get.example.com/i.sh | sudo bash\nchmod -R 777 /srv\n"
              "```\n```sql\nGRANT ALL PRIVILEGES ON *.* TO 'app'@'%';\n```\n"
              "```text\ntoken = \"ghp_abcdefghijklmnopqrstuvwxyz0123456789\"\n```\n")
    scan = scan_markdown(answer)
    assert scan.complete  # no block for semgrep: nothing left undone
    assert {(f.block_index, f.line, f.cwe) for f in scan} >= {
        (0, 1, "CWE-494"), (0, 2, "CWE-732"), (1, 1, "CWE-250"), (2, 1, "CWE-798")}


# --- blocks and languages -------------------------------------------------------------------

ANSWER = '''Here is how to do it:

```python
import os
os.system("ls " + folder)
```

1. In C++:
   ```cpp
   strcpy(dst, src);
   ```

~~~
#!/bin/sh
curl -k https://x.example
~~~

Inline `eval(x)` is not a block.
'''


def test_markdown_blocks_keep_their_index_and_line():
    scan = scan_markdown(ANSWER)
    got = {(f.block_index, f.language, f.line, f.cwe) for f in scan}
    assert got == {(0, "python", 2, "CWE-78"), (1, "cpp", 1, "CWE-120"),
                   (2, "shell", 2, "CWE-295")}  # the last fence names no language: guessed


@pytest.mark.parametrize("name,language", [
    ("TypeScript", "javascript"), ("{.bash}", "shell"), ("C#", "csharp"), ("cs", "csharp"),
    ("c++", "cpp"), ("rs", "rust"), ("Java", "java"), ("php", "php"), ("go", None)])
def test_language_names(name, language):
    assert normalise_language(name) == language


@pytest.mark.parametrize("code,language", [
    ("<?php echo 1;", "php"), ("#include <iostream>\nint main() { std::cout << 1; }", "cpp"),
    ("#include <stdio.h>\nint main(void) { return 0; }", "c"),
    ("fn main() {\n    println!(\"hi\");\n}", "rust"),
    ("import java.util.List;\nclass A {}", "java"),
    ("using System;\nConsole.WriteLine(1);", "csharp"), ("def f():\n    pass", "python")])
def test_language_is_guessed_when_the_fence_names_none(code, language):
    assert guess_language(code) == language


def test_a_fence_naming_another_language_gets_the_secret_rules_only():
    scan = scan_markdown('```go\npassword := "correct-horse-battery"\nexec(cmd)\n```')
    assert {f.rule_id for f in scan} == {"secret-assignment"}


def test_unclosed_fence_runs_to_the_end_and_prose_is_not_code():
    assert {f.cwe for f in scan_markdown("```js\nconst x = eval(input);\n")} == {"CWE-95"}
    assert scan_markdown("Never call eval(input()) on user data; use literal_eval.") == []


def test_quick_scan_says_it_is_not_complete():
    quick = scan_code("import os\nos.system('ls ' + d)\n", "python", semgrep=False)
    assert [f.cwe for f in quick] == ["CWE-78"]  # Corral's fallback rule still sees it
    assert not quick.complete and "semgrep was not run" in quick.summary()


# --- the command line -----------------------------------------------------------------------


def _cli(argv, capsys):
    from core.cli import run_subcommand

    code = run_subcommand("guard", argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_scans_all_blocks_of_a_markdown_file_in_one_call(capsys):
    code, out, _ = _cli(["--scan-code", str(DATA / "insecure_answer.md"), "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["complete"] is True
    assert "codeshield-semgrep" in report["engines"]
    rows = {(f["block_index"], f["line"], f["cwe"]) for f in report["findings"]}
    assert (6, 7, "CWE-120") in rows and (3, 12, "CWE-502") in rows and (5, 5, "CWE-676") in rows
    for f in report["findings"]:
        assert set(f) >= {"block_index", "line", "cwe", "rule_id", "severity"}


def test_cli_language_flag_reads_a_plain_file_as_that_language(tmp_path, capsys):
    source = tmp_path / "Tokens.txt"
    source.write_text("class T { int f() { return new java.util.Random().nextInt(); } }\n")
    code, out, _ = _cli(["--scan-code", str(source), "--language", "java", "--json"], capsys)
    findings = json.loads(out)["findings"]
    assert code == 0 and {f["cwe"] for f in findings} == {"CWE-330"}
    assert {f["block_index"] for f in findings} == {0} and findings[0]["line"] == 1
    code, _, err = _cli(["--scan-code", str(source), "--language", "cobol"], capsys)
    assert code == 1 and "cobol" in err and "csharp" in err


_SHELL_SQL = {"shell": ("curl -sSL https://get.example.com/i.sh | sudo bash\nchmod -R 777 /srv\n",
                        {1: "CWE-494", 2: "CWE-732"}),
              "sql": ("SELECT 1;\nGRANT ALL PRIVILEGES ON *.* TO 'app'@'%';\n", {2: "CWE-250"})}


@pytest.mark.parametrize("language", ["python", "javascript", "java", "csharp", "php", "rust",
                                      "c", "cpp", "shell", "sql"])
def test_cli_language_flag_scans_a_plain_file_in_each_language(language, tmp_path, capsys):
    """Each ``--language`` the issue names reads a file with no fence and no telling suffix
    as that language: the lines a reviewer marks are found, at their line numbers."""
    if language in _SHELL_SQL:
        code, expected = _SHELL_SQL[language]
    else:
        blocks = code_blocks((DATA / "insecure_answer.md").read_text())
        index = [b.language for b in blocks].index(language)
        code, expected = blocks[index].code, EXPECTED[index]
    source = tmp_path / "snippet.txt"
    source.write_text(code)
    status, out, _ = _cli(["--scan-code", str(source), "--language", language, "--json"], capsys)
    report = json.loads(out)
    assert status == 0 and report["complete"], report
    found = {(f["line"], f["cwe"]) for f in report["findings"]}
    assert set(expected.items()) <= found
    assert {f["block_index"] for f in report["findings"]} == {0}


def test_cli_says_when_the_scan_is_incomplete(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CORRAL_SEMGREP_CORE", "")  # as if semgrep were not installed
    source = tmp_path / "answer.md"
    source.write_text("```python\nimport os\nos.system('ls ' + d)\n```\n")
    code, out, _ = _cli(["--scan-code", str(source)], capsys)
    assert code == 3
    assert "block 1, line 2:" in out and "scan incomplete" in out and "semgrep" in out
