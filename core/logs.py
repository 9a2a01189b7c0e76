"""Logging to ``<data dir>/logs/corral.log`` (rotated); tracebacks go there, not to users."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

_configured = False


def log_dir() -> Path:
    from core.config import data_dir

    path = data_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def setup_logging(*, debug: bool = False, console: bool = False) -> Path:
    """Configure the 'corral' logger once; returns the log file path."""
    global _configured
    path = log_dir() / "corral.log"
    logger = logging.getLogger("corral")
    if _configured:
        return path
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    if console:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(stream)
    _configured = True
    return path
