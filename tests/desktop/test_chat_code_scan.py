"""The code scan of answers on the Chat page, as a user meets it: once an answer has come (or a
stored conversation is shown), one job per answer scans all its code blocks with CodeShield's
rules and semgrep, off the GUI thread; meanwhile the answer says "Scanning the code …"; then each
finding shows under its own block with its line within the block, its CWE, rule and severity.
A scan that could not finish says so under the answer and never reads as clean; showing the
transcript again scans nothing again; another conversation supersedes a scan on its way."""

from __future__ import annotations

import threading
from collections import deque

import pytest

import core.safety.code_scan.scan as scan_module
from core.chat.backends import StreamEvent
from core.safety.code_scan import CodeScan, code_blocks
from desktop.pages.chat.page import ChatPage
from desktop.pages.chat.scans import (
    CLEAN,
    INCOMPLETE,
    SCANNING,
    AnswerScan,
    answer_notes_html,
    block_map,
)
from tests.desktop.chat_actions import WAIT, ScriptedModel, send
from tests.desktop.test_chat_page import page_on
from tests.desktop.test_chat_safety import screenshot

#: prose between three blocks in different languages, one without a language, and a fourth
#: block indented in a list (code to the scanner, text on screen)
ANSWER = """Here is a loader:

```python
import pickle
import subprocess

def load(blob, cmd):
    data = pickle.loads(blob)
    subprocess.run(cmd, shell=True)
    return data
```

Install it with:

```bash
curl https://example.com/install.sh | sh
```

And the cleanup, without a language:

```
import os
os.system("rm -rf " + folder)
```

1. Finally, list the folder:

    ```python
    import os
    os.system("ls " + folder)
    ```
"""
CLEAN_ANSWER = "A sum:\n\n```python\ndef add(a, b):\n    return a + b\n```\n"


class AnsweringModel(ScriptedModel):
    """A chat backend that answers the texts it is given, one per turn, at once."""

    def __init__(self, *answers: str) -> None:
        self.answers = deque(answers)

    name = "answering"


    def stream(self, prompt, params):
        text = self.answers.popleft()
        yield StreamEvent(text=text, completion_tokens=len(text.split()))
        yield StreamEvent(done=True, finish_reason="stop", completion_tokens=len(text.split()))

    def cancel(self) -> None:
        pass


class SemgrepRuns:
    """Patches the scan's semgrep runner: records the thread of each run, and (``hold``) keeps
    each run waiting until ``release``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, hold: bool = False) -> None:
        self.threads: list[threading.Thread] = []
        self.gate = threading.Event()
        if not hold:
            self.gate.set()
        real = scan_module.run_semgrep

        def run(blocks, budget_s):
            self.threads.append(threading.current_thread())
            assert self.gate.wait(WAIT / 1000), "the test never released semgrep"
            return real(blocks, budget_s)

        monkeypatch.setattr(scan_module, "run_semgrep", run)

    def release(self) -> None:
        self.gate.set()


def scanned(qtbot, page: ChatPage) -> None:
    """Wait until the last answer's scan has come and is shown."""
    msg = page.store.messages(page.conversation_id)[-1]
    qtbot.waitUntil(lambda: page.scans.result(msg) is not None
                    and SCANNING not in page.transcript.toPlainText(), timeout=WAIT)


def under(shown: str, block_code: str, next_code: str | None) -> str:
    """The text shown between one code block and the next."""
    start = shown.index(block_code) + len(block_code)
    return shown[start: shown.index(next_code, start) if next_code else len(shown)]


def test_block_numbers_on_screen_and_in_the_scan_are_matched_by_their_code() -> None:
    from core.chat.markdown import split_blocks

    shown = [b.text for b in split_blocks(ANSWER) if b.kind == "code"]
    blocks = code_blocks(ANSWER)
    assert len(shown) == 3 and len(blocks) == 4  # the list's block is text on screen
    assert block_map(shown, blocks) == {0: 0, 1: 1, 2: 2}
    assert block_map(["x = 1", "  y = 2"], code_blocks(
        "```\nskip\n```\n```py\nx = 1\n```\n  ```py\n  y = 2\n  ```\n")) == {0: 1, 1: 2}


def test_code_on_screen_the_scan_did_not_read_is_never_called_clean() -> None:
    nothing = AnswerScan("text", (), CodeScan([]))
    said = answer_notes_html(nothing, set(), [0, 2])
    assert "Code blocks 1, 3 on screen were not scanned" in said and CLEAN not in said
    assert CLEAN in answer_notes_html(nothing, set())


def test_the_scan_runs_in_a_job_and_shows_semgrep_findings_under_their_blocks(
        qtbot, ctx, monkeypatch) -> None:
    runs = SemgrepRuns(monkeypatch, hold=True)
    page = page_on(qtbot, ctx, monkeypatch, AnsweringModel(ANSWER))
    page.show()
    send(qtbot, page, "Write a loader.")
    # the answer is shown at once; its scan is on its way
    shown = page.transcript.toPlainText()
    assert "pickle.loads(blob)" in shown and SCANNING in shown
    assert "Possible security problems" not in shown and page.transcript.findings == {}
    screenshot(page, "chat-code-scan-running")
    runs.release()
    scanned(qtbot, page)
    ctx.jobs.wait_all()
    # one scan for the whole answer, and semgrep never ran on the GUI thread
    assert len(runs.threads) == 1
    assert threading.main_thread() not in runs.threads
    answer = page.store.messages(page.conversation_id)[-1]
    found = page.transcript.findings
    python = {(f.line, f.rule_id, f.cwe, f.engine) for f in found[(answer.id, 0)]}
    assert {(5, "unsafe-pickle-use", "CWE-502", "codeshield-semgrep"),  # rules only semgrep
            (6, "insecure-subprocess-using-shell", "CWE-78", "codeshield-semgrep")} <= python
    assert {f.line for f in found[(answer.id, 1)]} == {1}  # curl | sh, in the bash block
    assert (2, "insecure-os-system-use") in {  # the block without a language, read as Python
        (f.line, f.rule_id) for f in found[(answer.id, 2)]}
    shown = page.transcript.toPlainText()
    python_block = under(shown, "return data", "curl https")
    assert "line 5: unsafe deserialization (CWE-502 · rule unsafe-pickle-use · warning)" in \
        python_block
    assert "line 6: OS command injection (CWE-78 · rule insecure-subprocess-using-shell" in \
        python_block
    assert "line 1:" in under(shown, "install.sh | sh", "os.system(\"rm")
    assert "code (read as python)" in shown
    assert "line 2: OS command injection (CWE-78 · rule insecure-os-system-use" in under(
        shown, 'os.system("rm -rf " + folder)', "Finally")
    # the block the transcript shows as text has its findings under the answer
    assert "Code block 4 of the answer (shown as text):" in shown
    assert SCANNING not in shown and INCOMPLETE not in shown and CLEAN not in shown
    screenshot(page, "chat-code-scan")
    # shown again (after a turn, or the conversation chosen again): nothing is scanned again
    page.show_conversation()
    page.load_conversation(page.conversation_id)
    assert "line 5: unsafe deserialization" in page.transcript.toPlainText()
    ctx.jobs.wait_all()
    assert len(runs.threads) == 1


def test_an_incomplete_scan_says_so_and_never_reads_as_clean(qtbot, ctx, monkeypatch) -> None:
    monkeypatch.setenv("CORRAL_SEMGREP_CORE", "")  # semgrep is missing
    page = page_on(qtbot, ctx, monkeypatch, AnsweringModel(ANSWER, CLEAN_ANSWER))
    page.show()
    send(qtbot, page, "Write a loader.")
    scanned(qtbot, page)
    shown = page.transcript.toPlainText()
    assert f"{INCOMPLETE}semgrep is not installed" in shown
    assert "The problems listed are those found before it stopped." in shown
    # what the line rules found is still shown under its block
    assert "line 5:" in under(shown, "return data", "curl https")
    send(qtbot, page, "And a clean one?")
    scanned(qtbot, page)
    last = page.transcript.toPlainText().split("return a + b")[-1]
    assert f"{INCOMPLETE}semgrep is not installed" in last
    assert "It found nothing so far, which does not mean the code is safe." in last
    assert CLEAN not in page.transcript.toPlainText()
    screenshot(page, "chat-code-scan-incomplete")
    ctx.jobs.wait_all()


def test_a_complete_scan_without_findings_says_so(qtbot, ctx, monkeypatch) -> None:
    page = page_on(qtbot, ctx, monkeypatch, AnsweringModel(CLEAN_ANSWER))
    send(qtbot, page, "Add two numbers.")
    scanned(qtbot, page)
    shown = page.transcript.toPlainText()
    assert CLEAN in shown and INCOMPLETE not in shown and "Possible security" not in shown
    ctx.jobs.wait_all()


def test_another_conversation_supersedes_a_scan_and_a_stored_one_is_scanned_when_shown(
        qtbot, ctx, monkeypatch) -> None:
    runs = SemgrepRuns(monkeypatch, hold=True)
    page = page_on(qtbot, ctx, monkeypatch, AnsweringModel(ANSWER))
    send(qtbot, page, "Write a loader.")
    first = page.conversation_id
    answer = page.store.messages(first)[-1]
    assert SCANNING in page.transcript.toPlainText()
    page.new_conversation()  # the user moves on while the scan runs
    runs.release()
    ctx.jobs.wait_all()
    qtbot.wait(0)  # let whatever the finished job sent reach the page: none of it is painted
    assert page.scans.result(answer) is None and page.transcript.findings == {}
    assert "Possible security" not in page.transcript.toPlainText()
    # a restart: the stored conversation is scanned when it is shown
    again = ChatPage(ctx)
    qtbot.addWidget(again)
    again.load_conversation(first)
    assert SCANNING in again.transcript.toPlainText()
    scanned(qtbot, again)
    assert "line 5: unsafe deserialization" in again.transcript.toPlainText()
    ctx.jobs.wait_all()
    assert len(runs.threads) == 2 and threading.main_thread() not in runs.threads
