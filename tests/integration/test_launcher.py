"""The `corral` command itself, run as a user runs it: in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.app import PAGES

HEAVY = ("PySide6", "torch", "chromadb", "llama_cpp", "sentence_transformers")


def _run(*code_or_args: str, module: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "desktop.launcher", *code_or_args] if module else [sys.executable, "-c", *code_or_args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ.copy())


def test_import_core_pulls_in_nothing_heavy() -> None:
    code = f"import sys, core, core.cli, core.config, core.errors; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_nothing_heavy(flag: str) -> None:
    code = (
        "import sys\nfrom core.cli import main\n"
        f"try:\n    main([{flag!r}])\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout


def test_errors_are_one_line_without_traceback() -> None:
    out = _run("models", "inspect", "/no/such/model.gguf", module=True)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert lines[0].startswith("corral: ")


def test_screenshots_command_writes_pngs(tmp_path: Path) -> None:
    out = _run("--screenshots", str(tmp_path), module=True)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"{t.lower()}.png" for t, *_ in PAGES)
