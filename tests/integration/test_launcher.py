"""The `corral` command itself, run as a user runs it: in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from desktop.app import PAGES

HEAVY = ["torch", "sentence_transformers", "chromadb", "llama_cpp", "PySide6", "numpy"]


def _run(*code_or_args: str, module: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = ([sys.executable, "-m", "desktop.launcher", *code_or_args] if module
           else [sys.executable, "-c", *code_or_args])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ.copy())


def test_screenshots_command_writes_pngs(tmp_path: Path) -> None:
    out = _run("--screenshots", str(tmp_path), module=True)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"{t.lower()}.png" for t, *_ in PAGES)
