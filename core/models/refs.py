"""Model references used everywhere (GUI, CLI, chat) and their resolution to something runnable.

Syntax: ``ollama:NAME[:TAG]`` (through the Ollama server), ``store:NAME[:TAG]`` (the Ollama
blob on disk, run by llama.cpp, no server needed), a path to a ``.gguf`` file (``gguf:PATH``
also works), or the name of an imported GGUF (``corral models import``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from core.errors import ModelNotFound

if TYPE_CHECKING:
    from core.config import Settings

RefKind = Literal["ollama", "store", "gguf"]
_PREFIXES: dict[str, RefKind] = {"ollama": "ollama", "store": "store", "gguf": "gguf"}


@dataclass(frozen=True)
class ModelRef:
    kind: RefKind
    name: str  # Ollama name, imported name, or the path text
    path: Path | None = None  # set for a path to a GGUF file

    def __str__(self) -> str:
        if self.kind == "gguf":
            return str(self.path) if self.path is not None else self.name
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class ResolvedModel:
    """What a caller needs to run a model."""

    kind: Literal["ollama", "gguf"]  # 'ollama': through the server; 'gguf': llama.cpp engine
    name: str
    path: Path | None  # the GGUF on disk ('gguf')
    display: str
    source: Literal["ollama", "store", "gguf", "imported"]
    ref: str  # the canonical reference text
    host: str | None = None  # the Ollama base URL ('ollama')
    #: a LoRA adapter GGUF that must be applied over ``path`` ('store' models made with
    #: ADAPTER); whoever runs ``path`` without it runs another model
    adapter: Path | None = None


def _looks_like_path(text: str) -> bool:
    return (text.lower().endswith(".gguf") or "/" in text or "\\" in text
            or text.startswith(("~", ".")))


def parse_ref(text: str) -> ModelRef:
    """Split a reference; raises ModelNotFound for an empty or malformed one."""
    raw = text.strip()
    if not raw:
        raise ModelNotFound("no model given",
                            hint="Name one: ollama:NAME, store:NAME, a .gguf path, or an "
                                 "imported model.")
    prefix, sep, rest = raw.partition(":")
    kind = _PREFIXES.get(prefix.lower()) if sep else None
    if kind is not None:
        rest = rest.strip()
        if not rest:
            raise ModelNotFound(f"'{raw}' names no model after '{prefix}:'")
        if kind == "gguf":
            if _looks_like_path(rest):
                return ModelRef("gguf", rest, Path(rest).expanduser())
            return ModelRef("gguf", rest)
        return ModelRef(kind, rest)
    if _looks_like_path(raw) or Path(raw).expanduser().is_file():
        return ModelRef("gguf", raw, Path(raw).expanduser())
    return ModelRef("gguf", raw)  # the name of an imported model


def resolve(ref: ModelRef | str, settings: Settings) -> ResolvedModel:
    """Turn a reference into what runs it. Raises ModelNotFound / ModelFileDamaged.

    Cheap: nothing is loaded and the Ollama server is not contacted (its errors come when the
    model is used); for the store, the manifest and blobs are checked, and an adapter layer
    that cannot be applied is refused (ModelFileDamaged naming it), never dropped.
    """
    r = parse_ref(ref) if isinstance(ref, str) else ref
    if r.kind == "ollama":
        from core.models.ollama_host import resolve_host

        name = r.name if ":" in r.name.rsplit("/", 1)[-1] else f"{r.name}:latest"
        return ResolvedModel("ollama", name, None, f"{name} (Ollama)", "ollama",
                             f"ollama:{name}", host=resolve_host(settings.ollama.host))
    if r.kind == "store":
        from core.models.ollama_store import find_store

        store = find_store(settings.ollama.store_dir)
        if store is None:
            raise ModelNotFound(
                f"no Ollama model store was found for '{r.name}'",
                hint="Set the store folder in Settings, or set OLLAMA_MODELS.")
        model = store.find(r.name)
        path = model.gguf_path()
        adapter = model.adapter_path()
        how = "llama.cpp with its LoRA adapter" if adapter else "llama.cpp"
        return ResolvedModel("gguf", model.short_name, path,
                             f"{model.short_name} (Ollama store, {how})", "store",
                             f"store:{model.short_name}", adapter=adapter)
    if r.path is not None:
        path = r.path
        if not path.is_file():
            raise ModelNotFound(f"no such model file: {path}")
        path = path.resolve()
        return ResolvedModel("gguf", path.stem, path, f"{path.name} (GGUF file)", "gguf",
                             str(path))
    from core.models import library

    entry = library.get(r.name)
    if entry is None:
        raise ModelNotFound(
            f"no model called '{r.name}'",
            hint=f"Use ollama:{r.name} for an Ollama model, a path to a .gguf file, or import "
                 "the file first (corral models import PATH).")
    path = Path(entry.path)
    if not path.is_file():
        raise ModelNotFound(f"the file of imported model '{entry.name}' is gone: {path}",
                            hint="Import it again from its new place.")
    return ResolvedModel("gguf", entry.name, path, f"{entry.name} (imported GGUF)", "imported",
                         entry.name)
