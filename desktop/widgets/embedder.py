"""The embedder choice as Settings and the knowledge-base dialog show it: spec and speed mode."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QLineEdit, QWidget

EMBEDDER_MODES = [
    ("standard", "Standard — sentence-transformers (torch)"),
    ("fast", "Fast — same model compiled for this CPU (about 2.5x)"),
    ("fastest", "Fastest — int8, calibrated on your documents (about 3.7x)"),
]

SPEC_HINT = "minilm, a sentence-transformers folder, ollama:NAME, or a .gguf"


def embedder_spec_edit(spec: str, parent: QWidget | None = None) -> QLineEdit:
    edit = QLineEdit(spec, parent)
    edit.setPlaceholderText(SPEC_HINT)
    return edit


def embedder_mode_box(mode: str, parent: QWidget | None = None) -> QComboBox:
    """A combo box of the speed modes, ``mode`` selected (the first when unknown)."""
    box = QComboBox(parent)
    for value, label in EMBEDDER_MODES:
        box.addItem(label, value)
    box.setCurrentIndex(max(0, box.findData(mode)))
    return box
