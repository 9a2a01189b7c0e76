"""Which optional parts this Corral has: what each feature needs and whether it is here.

Found without importing the heavy packages (``importlib.util.find_spec``), so the About box
can ask on the GUI thread.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Component:
    """One feature that depends on something a build may leave out."""

    feature: str
    needs: str
    present: bool
    detail: str = ""  # where it was found, or what works instead


def _installed(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
        return False


def components() -> list[Component]:
    """The optional parts, in the order the About box lists them."""
    from core.safety.code_scan.semgrep import find_semgrep_core

    semgrep = find_semgrep_core()
    return [
        Component("Standard embedder mode", "torch and sentence-transformers",
                  _installed("torch", "sentence_transformers")),
        Component("Fast and fastest embedder modes", "OpenVINO (the 'fast' extra), or a model "
                  "already exported", _installed("openvino")),
        Component("Lab: contextual embeddings and the classifier", "torch",
                  _installed("torch")),
        Component("Local models (llama.cpp engine)", "llama-cpp-python",
                  _installed("llama_cpp")),
        Component("Code scan: CodeShield's semgrep rules", "semgrep's engine (semgrep-core)",
                  semgrep is not None,
                  str(semgrep) if semgrep else "not inside: the code scan uses CodeShield's "
                  "regex rules and Corral's own"),
    ]
