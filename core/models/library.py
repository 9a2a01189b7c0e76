"""Imported GGUF files: ``models.json`` under the data dir, each a name, a path and a SHA-256.

Files are linked in place, never copied. Importing checks the file (header, metadata and size)
first, so a damaged download is refused with the reason instead of being registered.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.config import atomic_write_text, data_dir
from core.errors import Cancelled, CorralError, ModelFileDamaged, ModelNotFound
from core.models.gguf_meta import read_gguf, sha256_file

FILE_NAME = "models.json"
_lock = threading.Lock()
_BAD_NAME = re.compile(r"[^A-Za-z0-9_.+\-]+")

#: progress(fraction, text); raising Cancelled from it stops the import.
Progress = Callable[[float, str], None]


@dataclass
class ImportedModel:
    name: str
    path: str
    sha256: str
    size: int
    added: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImportFailure:
    path: str
    reason: str


def library_path() -> Path:
    return data_dir() / FILE_NAME


def load() -> list[ImportedModel]:
    """The imported models; an unreadable file gives a CorralError, a missing one nothing."""
    path = library_path()
    if not path.exists():
        return []
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorralError(f"cannot read the list of imported models {path}: {exc}") from None
    out = []
    for item in raw.get("models", []) if isinstance(raw, dict) else []:
        try:
            out.append(ImportedModel(name=str(item["name"]), path=str(item["path"]),
                                     sha256=str(item.get("sha256", "")),
                                     size=int(item.get("size", 0)),
                                     added=float(item.get("added", 0.0))))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _save(models: list[ImportedModel]) -> None:
    doc = {"schema_version": 1, "models": [m.to_dict() for m in models]}
    atomic_write_text(library_path(), json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def get(name: str) -> ImportedModel | None:
    return next((m for m in load() if m.name == name), None)


def clean_name(text: str) -> str:
    """A name usable as a model reference: no spaces, colons or slashes."""
    name = _BAD_NAME.sub("-", text.strip()).strip("-.")
    return name[:80] or "model"


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def import_file(path: str | Path, name: str | None = None,
                progress: Progress | None = None) -> ImportedModel:
    """Check and register one GGUF in place. Importing the same path again refreshes it."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelNotFound(f"no such file: {p}")
    p = p.resolve()
    info = read_gguf(p)  # ModelFileDamaged with the reason if it is not a usable GGUF

    def hashing(done: int, total: int) -> None:
        if progress is not None:
            progress(done / total if total else 1.0, f"checking {p.name}")

    digest = sha256_file(p, hashing)
    with _lock:
        models = load()
        existing = next((m for m in models if Path(m.path) == p), None)
        if name is not None:
            wanted = clean_name(name)
            clash = next((m for m in models if m.name == wanted and m is not existing), None)
            if clash is not None:
                raise CorralError(f"an imported model is already called '{wanted}' "
                                  f"({clash.path})", hint="Choose another --name.")
        elif existing is not None:
            wanted = existing.name
        else:
            wanted = _unique(clean_name(info.name or p.stem), {m.name for m in models})
        entry = ImportedModel(name=wanted, path=str(p), sha256=digest, size=p.stat().st_size,
                              added=time.time())
        models = [m for m in models if m is not existing] + [entry]
        _save(models)
    return entry


def find_gguf_files(folder: Path, max_depth: int = 6) -> list[Path]:
    """``*.gguf`` files under ``folder`` (links not followed), sorted."""
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        try:
            entries = sorted(d.iterdir())
        except OSError:
            return
        for e in entries:
            if e.is_symlink():
                continue
            if e.is_dir() and depth < max_depth:
                walk(e, depth + 1)
            elif e.is_file() and e.suffix.lower() == ".gguf":
                found.append(e)

    walk(folder, 0)
    return found


def import_paths(paths: Iterable[str | Path], name: str | None = None,
                 progress: Progress | None = None
                 ) -> tuple[list[ImportedModel], list[ImportFailure]]:
    """Import files and folders (every ``*.gguf`` inside); failures are collected, not raised.

    ``name`` applies only when exactly one file is imported. Cancelled propagates.
    """
    files: list[Path] = []
    failures: list[ImportFailure] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            inside = find_gguf_files(p)
            if not inside:
                failures.append(ImportFailure(str(p), "the folder holds no .gguf files"))
            files.extend(inside)
        elif p.exists():
            files.append(p)
        else:
            failures.append(ImportFailure(str(p), "no such file or folder"))
    if name is not None and len(files) != 1:
        raise CorralError("--name needs exactly one file to import",
                          hint="Import folders without --name; each model keeps its own name.")
    imported: list[ImportedModel] = []
    for i, f in enumerate(files):
        def step(fraction: float, text: str, i: int = i) -> None:
            if progress is not None:
                progress((i + fraction) / len(files), text)

        try:
            imported.append(import_file(f, name, step))
        except Cancelled:
            raise
        except (ModelFileDamaged, ModelNotFound) as exc:
            failures.append(ImportFailure(str(f), getattr(exc, "reason", None) or exc.message))
        except OSError as exc:
            failures.append(ImportFailure(str(f), f"cannot read it: {exc.strerror or exc}"))
    return imported, failures


def forget(name: str) -> ImportedModel:
    """Remove an imported model from the list; the file itself is left alone."""
    with _lock:
        models = load()
        entry = next((m for m in models if m.name == name), None)
        if entry is None:
            raise ModelNotFound(f"no imported model is called '{name}'")
        _save([m for m in models if m is not entry])
    return entry
