"""Fail points: named places where a test can kill this process as ``kill -9`` would.

``CORRAL_KILL_AT="name"`` (or ``"name:N"``, the N-th time it is reached) makes ``reached``
send SIGKILL to the process itself at that place: no cleanup, no flush, no ``finally``,
exactly what a crash or a power cut leaves behind. Unset, ``reached`` costs one lookup.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("CORRAL_KILL_AT", "")
_NAME, _, _COUNT = _SPEC.partition(":")
_WANTED = int(_COUNT) if _COUNT.isdigit() else 1
_hits = 0


def reached(name: str) -> None:
    global _hits
    if not _NAME or name != _NAME:
        return
    _hits += 1
    if _hits >= _WANTED:
        os.kill(os.getpid(), signal.SIGKILL)
