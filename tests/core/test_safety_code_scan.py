"""The insecure-code scan: every rule's own positive/negative case from code_rules.json, and
realistic answers per language (what a user would see next to a code block)."""

from __future__ import annotations

import json

import pytest

from core.safety.code_scan import (
    LANGUAGES,
    RULES_PATH,
    code_blocks,
    load_rules,
    normalise_language,
    scan_code,
    scan_markdown,
)

RULES = load_rules()


def _ids(findings):
    return {f.rule_id for f in findings}


def _langs(rule):
    return LANGUAGES if "*" in rule.languages else rule.languages


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_rule_flags_its_positive_example(rule):
    for lang in _langs(rule):
        assert rule.id in _ids(scan_code(rule.positive, lang)), (rule.id, lang)


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_rule_spares_its_negative_example(rule):
    for lang in _langs(rule):
        assert rule.id not in _ids(scan_code(rule.negative, lang)), (rule.id, lang)


def test_rule_file_is_complete_and_covers_the_languages():
    data = json.loads(RULES_PATH.read_text())
    ids = [r["id"] for r in data["rules"]]
    assert len(ids) == len(set(ids))
    for raw in data["rules"]:
        for key in ("title", "why", "pattern", "positive", "negative", "languages"):
            assert raw[key], (raw["id"], key)
    covered = {lang for r in RULES for lang in r.languages}
    assert set(LANGUAGES) <= covered
    needed = ["py-eval-exec", "py-subprocess-shell", "py-os-system-format", "py-pickle-load",
              "py-yaml-load", "py-tls-verify-off", "secret-assignment", "py-weak-password-hash",
              "py-sql-format", "c-unsafe-string", "js-eval", "sh-eval", "sql-dynamic-concat"]
    assert set(needed) <= set(ids)


# --- realistic snippets -----------------------------------------------------------------------

PYTHON_BAD = '''\
import hashlib, os, pickle, subprocess, requests, yaml

API_KEY = "9f8e7d6c5b4a39281706"

def handler(request, cur):
    expr = request.args["q"]
    value = eval(expr)
    subprocess.run(f"convert {request.args['file']} out.png", shell=True)
    os.system("tar czf backup.tgz %s" % request.args["dir"])
    session = pickle.loads(request.cookies["session"])
    settings = yaml.load(request.data)
    requests.post("https://internal/api", json={}, verify=False)
    pw_hash = hashlib.md5(request.form["password"].encode()).hexdigest()
    cur.execute("SELECT * FROM users WHERE name = '%s'" % request.args["name"])
'''
PYTHON_GOOD = '''\
import hashlib, json, os, subprocess, requests, yaml

API_KEY = os.environ["API_KEY"]

def handler(request, cur):
    # never use eval(expr) or shell=True here
    value = json.loads(request.args["q"])
    subprocess.run(["convert", request.args["file"], "out.png"], check=True)
    settings = yaml.safe_load(request.data)
    requests.post("https://internal/api", json={}, timeout=10)
    digest = hashlib.sha256(request.files["upload"].read()).hexdigest()
    salt = os.urandom(16)
    pw_hash = hashlib.scrypt(request.form["password"].encode(), salt=salt, n=2**14, r=8, p=1)
    cur.execute("SELECT * FROM users WHERE name = %s", (request.args["name"],))
'''

JS_BAD = '''\
const { exec } = require("child_process");
const https = require("https");
app.get("/run", (req, res) => {
  exec(`ping -c 1 ${req.query.host}`, (err, out) => res.send(out));
  const total = eval(req.query.formula);
  db.query("SELECT * FROM orders WHERE id = " + req.params.id);
  const hash = crypto.createHash("sha1").update(req.body.password).digest("hex");
  document.getElementById("c").innerHTML = req.query.comment;
});
const agent = new https.Agent({ rejectUnauthorized: false });
const stripeKey = "sk-live-abcdefghijklmnopqrstuvwx";
'''
JS_GOOD = '''\
const { execFile } = require("child_process");
app.get("/run", (req, res) => {
  execFile("ping", ["-c", "1", req.query.host], (err, out) => res.send(out));
  const total = Number(req.query.formula);
  db.query("SELECT * FROM orders WHERE id = $1", [req.params.id]);
  const hash = await bcrypt.hash(req.body.password, 12);
  document.getElementById("c").textContent = req.query.comment;
});
const stripeKey = process.env.STRIPE_KEY;
'''

SHELL_BAD = '''\
#!/bin/bash
export DB_PASSWORD="hunter2hunter2"
curl -sSL https://get.example.com/install.sh | sudo bash
curl -k https://internal.example.com/data.json -o data.json
eval "$1"
chmod -R 777 /srv/app
'''
SHELL_GOOD = '''\
#!/bin/bash
set -euo pipefail
# curl -k would be insecure; we verify instead
curl -fsSL https://get.example.com/install.sh -o install.sh
sha256sum -c install.sh.sha256
chmod 750 /srv/app
printf '%s\\n' "$1"
'''

C_BAD = '''\
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    char name[32], cmd[128];
    gets(name);
    strcpy(name, argv[1]);
    sprintf(cmd, "grep %s /etc/passwd", name);
    system(cmd);
    return 0;
}
'''
C_GOOD = '''\
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    char name[32];
    if (!fgets(name, sizeof name, stdin)) return 1;
    snprintf(name, sizeof name, "%s", argv[1]);
    execlp("grep", "grep", "--", name, "/etc/passwd", (char *)NULL);
    return 0;
}
'''

SQL_BAD = """\
CREATE USER reporting IDENTIFIED BY 'Winter2024!';
GRANT ALL PRIVILEGES ON *.* TO 'reporting'@'%';
DECLARE @sql nvarchar(max);
SET @sql = 'SELECT * FROM accounts WHERE owner = ''' + @owner + '''';
EXEC(@sql);
UPDATE users SET pw = MD5(password_plain) WHERE id = 1;
"""
SQL_GOOD = """\
CREATE USER reporting IDENTIFIED BY :reporting_password;
GRANT SELECT ON shop.orders TO 'reporting'@'10.0.0.%';
EXEC sp_executesql N'SELECT * FROM accounts WHERE owner = @o', N'@o nvarchar(64)', @o = @owner;
-- never EXEC(@sql) with concatenated input
SELECT MD5(file_blob) AS checksum FROM attachments;
"""


@pytest.mark.parametrize("lang,code,expected", [
    ("python", PYTHON_BAD, {"secret-assignment", "py-eval-exec", "py-subprocess-shell",
                            "py-os-system-format", "py-pickle-load", "py-yaml-load",
                            "py-tls-verify-off", "py-weak-password-hash", "py-sql-format"}),
    ("javascript", JS_BAD, {"js-child-process", "js-eval", "js-sql-concat",
                            "js-weak-password-hash", "js-inner-html", "js-tls-off",
                            "secret-known-format"}),
    ("shell", SHELL_BAD, {"secret-assignment", "sh-pipe-to-shell", "sh-tls-off", "sh-eval",
                          "sh-chmod-777"}),
    ("c", C_BAD, {"c-unsafe-string", "c-system-format"}),
    ("sql", SQL_BAD, {"sql-hardcoded-password", "sql-grant-all", "sql-dynamic-concat",
                      "sql-weak-password-hash"}),
])
def test_realistic_insecure_code_is_flagged(lang, code, expected):
    found = _ids(scan_code(code, lang))
    assert expected <= found, expected - found


@pytest.mark.parametrize("lang,code", [
    ("python", PYTHON_GOOD), ("javascript", JS_GOOD), ("shell", SHELL_GOOD), ("c", C_GOOD),
    ("sql", SQL_GOOD),
])
def test_realistic_careful_code_is_clean(lang, code):
    assert scan_code(code, lang) == []


def test_finding_has_line_rule_and_why():
    findings = scan_code(C_BAD, "c")
    strcpy = next(f for f in findings if f.snippet.startswith("strcpy"))
    assert strcpy.line == 6 and strcpy.rule_id == "c-unsafe-string"
    assert strcpy.why and strcpy.title and strcpy.language == "c"


# --- Markdown answers --------------------------------------------------------------------------

ANSWER = '''Here is how to do it:

```python
import os
os.system("ls " + folder)
```

And in C++:

1. First step:
   ```cpp
   strcpy(dst, src);
   ```

~~~
#!/bin/sh
curl -k https://x.example
~~~

Inline `eval(x)` is not a block.
'''


def test_scan_markdown_finds_each_block_with_its_index_and_line():
    findings = scan_markdown(ANSWER)
    got = {(f.block_index, f.language, f.line, f.rule_id) for f in findings}
    assert got == {
        (0, "python", 2, "py-os-system-format"),
        (1, "c", 1, "c-unsafe-string"),
        (2, "shell", 2, "sh-tls-off"),  # no language on the fence: guessed from the shebang
    }


def test_blocks_and_languages():
    blocks = code_blocks(ANSWER)
    assert [b.language for b in blocks] == ["python", "c", "shell"]
    assert blocks[1].code == "strcpy(dst, src);"
    assert normalise_language("TypeScript") == "javascript"
    assert normalise_language("{.bash}") == "shell"
    assert normalise_language("rust") is None


def test_unclosed_fence_runs_to_the_end():
    findings = scan_markdown("```js\nconst x = eval(input);\n")
    assert _ids(findings) == {"js-eval"}


def test_unknown_language_gets_the_secret_rules_only():
    findings = scan_code('password = "correct-horse-battery"\nstrcpy(a, b);', "rust")
    assert _ids(findings) == {"secret-assignment"}


def test_no_language_gets_every_rule():
    assert _ids(scan_code("x = eval(input())", None)) == {"py-eval-exec", "js-eval"}


def test_plain_prose_has_no_findings():
    assert scan_markdown("Never call eval(input()) on user data; use ast.literal_eval.") == []
