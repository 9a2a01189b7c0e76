"""Small helpers every subcommand shares: the settings, JSON output, input files, a terminal
progress bar."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from core.config import Settings
from core.errors import CorralError


def load_settings() -> Settings:
    """The user's settings, read from the settings file: the one place below ``corral`` that
    reads it. A subcommand calls this once and passes the settings down; core never reads
    the file itself, so a broken file is one clear error here (SettingsError)."""
    return Settings.load()


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def print_json(obj: Any, *, lines: bool = False) -> None:
    """Print ``obj`` as JSON (one compact line with ``lines``, else indented)."""
    text = json.dumps(obj, ensure_ascii=False, default=_default, indent=None if lines else 2)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def read_input(path_or_dash: str) -> str:
    """The text of a file, or of standard input for '-'."""
    if path_or_dash == "-":
        return sys.stdin.read()
    path = Path(path_or_dash)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorralError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorralError(f"cannot read {path}: {exc}") from None


def read_json_input(path_or_dash: str) -> Any:
    text = read_input(path_or_dash)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        name = "standard input" if path_or_dash == "-" else path_or_dash
        raise CorralError(f"{name} is not valid JSON: {exc}") from None


class ProgressBar:
    """A one-line progress bar on a terminal (stderr); silent when stderr is not a terminal."""

    def __init__(self, label: str = "", *, stream: Any = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = label
        self.width = width
        self._last = 0.0

    def update(self, fraction: float | None, text: str = "", *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        if fraction is None:
            line = f"{self.label} {text}"
        else:
            f = min(max(fraction, 0.0), 1.0)
            filled = int(f * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            line = f"{self.label} [{bar}] {f * 100:5.1f}% {text}"
        self.stream.write("\r" + line[:120].ljust(120))
        self.stream.flush()

    def close(self, text: str = "") -> None:
        if self.enabled:
            self.stream.write("\r" + (f"{self.label} {text}".strip()).ljust(120) + "\n")
            self.stream.flush()
