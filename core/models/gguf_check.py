"""The cheap checks a GGUF must pass before llama.cpp is allowed to open it."""

from __future__ import annotations

from pathlib import Path

from core.errors import ModelFileDamaged, UnsafeTemplate


def check_loadable(path: str | Path) -> None:
    """Raise ModelFileDamaged (or UnsafeTemplate) unless ``path`` is a sound GGUF v2/v3 file.

    The defensive reader (core.models.gguf_meta) checks magic, version, every count and
    length, the tensor table and that the declared tensor data fits in the file; then the
    chat template must pass the sandbox check (FORMATS 6.5).
    """
    from core.models.gguf_meta import read_gguf, template_problem

    p = Path(path)
    if not p.is_file():
        raise ModelFileDamaged(str(p), "no such file")
    info = read_gguf(p)
    problem = template_problem(info.chat_template)
    if problem:
        raise UnsafeTemplate(f"the chat template of {p.name} is unsafe: {problem}",
                             hint="Corral will not load this file.")
