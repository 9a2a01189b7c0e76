"""Where workshop results land: a temporary file, renamed into the library when complete.

Every quantized or merged model is written to ``.<name>.partial-<pid>`` next to its final
place, checked, renamed atomically, registered in ``models.json`` and given a provenance
sidecar (``<file>.provenance.json``: source SHA-256, method, parameters, parents, date).
Anything that goes wrong (an error, a cancel, a full disk) deletes the temporary file, so
no partial model is ever left in the library.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.config import atomic_write_text, data_dir
from core.errors import CorralError, NotEnoughSpace
from core.units import human_size

PROVENANCE_SUFFIX = ".provenance.json"
#: room kept free on top of the estimate (metadata, file-system overhead)
_MARGIN = 16 << 20
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def models_dir() -> Path:
    """The library folder where workshop outputs go when no ``--out`` is given."""
    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_free_space(folder: Path, need_bytes: int) -> None:
    """Raise NotEnoughSpace before anything is written when ``folder`` lacks the room."""
    try:
        have = shutil.disk_usage(folder).free
    except OSError as exc:
        raise CorralError(f"cannot check the free space in {folder}: "
                          f"{exc.strerror or exc}") from None
    need = max(0, int(need_bytes)) + _MARGIN
    if have < need:
        raise NotEnoughSpace(f"not enough free space in {folder}: need {human_size(need)}, "
                             f"have {human_size(have)}")


def provenance_path(model: Path) -> Path:
    return model.with_name(model.name + PROVENANCE_SUFFIX)


def read_provenance(model: Path) -> dict[str, Any] | None:
    """The provenance recorded next to a workshop output, or None if there is none."""
    try:
        data = json.loads(provenance_path(model).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def map_os_error(exc: OSError, path: Path) -> CorralError:
    """A typed error for a failed write; a full disk or file-size limit says so."""
    if exc.errno in _DISK_FULL:
        return NotEnoughSpace(f"the disk is full (or a file-size limit was hit) while writing "
                              f"{path.name}: {exc.strerror or exc}; the partial file was deleted")
    return CorralError(f"cannot write {path}: {exc.strerror or exc}; "
                       "the partial file was deleted")


def final_path(tmp: Path) -> Path:
    """Where the temporary path yielded by :func:`library_output` lands when complete."""
    name = tmp.name[1:] if tmp.name.startswith(".") else tmp.name
    return tmp.with_name(name.rsplit(".partial-", 1)[0])


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``stem-2.gguf`` ... when that file exists already."""
    path = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 2
    while path.exists():
        path = folder / f"{stem}-{n}{suffix}"
        n += 1
    return path


def _final_path(out: Path | None, default_name: str) -> Path:
    if out is None:
        return _free_name(models_dir(), default_name)
    final = Path(out).expanduser()
    if final.is_dir():
        return _free_name(final, default_name)
    if final.exists():
        raise CorralError(f"{final} exists already; Corral does not overwrite models",
                          hint="Choose another --out, or delete the old file first.")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise map_os_error(exc, final) from None
    return final.resolve()


def _register(final: Path, provenance: dict[str, Any]) -> None:
    from core.models import library

    entries = library.load()
    existing = next((m for m in entries if Path(m.path) == final), None)
    name = None
    if existing is None:
        base = library.clean_name(final.stem)
        taken = {m.name for m in entries}
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
    entry = library.import_file(final, name)
    record = {**provenance, "output_sha256": entry.sha256, "library_name": entry.name,
              "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    atomic_write_text(provenance_path(final),
                      json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")


@contextmanager
def library_output(out: Path | None, *, default_name: str, need_bytes: int,
                   provenance: dict[str, Any]) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to the final place and register it.

    ``out`` is a file path, a folder, or None (the library folder, named ``default_name``;
    an existing file is never overwritten). Free space is checked before the block runs.
    :func:`final_path` tells where the yielded temporary file will land.
    """
    final = _final_path(out, default_name)
    check_free_space(final.parent, need_bytes)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        yield tmp
        if not tmp.is_file():
            raise CorralError(f"nothing was written for {final.name}")
        from core.models.gguf_meta import read_gguf

        read_gguf(tmp)  # a damaged result never lands in the library
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise map_os_error(exc, final) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _register(final, provenance)
