"""One list of every model the user has: Ollama server, Ollama store on disk, GGUF files.

``list_models`` never raises for a backend that is away: the Ollama server being down or the
store missing becomes a note in ``ModelList.notes``; a damaged file becomes a row with a
``problem``. ``inspect_model`` gives everything known about one reference.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import CorralError, ModelFileDamaged
from core.models.gguf_meta import GGUFInfo, read_gguf, template_problem

if TYPE_CHECKING:
    from core.config import Settings
    from core.models.ollama_client import OllamaClient

SOURCE_LABELS = {"ollama": "Ollama server", "store": "Ollama store", "gguf": "GGUF file"}


@dataclass
class ModelEntry:
    """One row of the Models table / ``corral models list``."""

    ref: str
    name: str
    source: str  # 'ollama', 'store' or 'gguf'
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""
    file_size: int = 0
    context_length: int | None = None
    loaded: bool = False
    path: str | None = None
    digest: str = ""  # sha256 hex (imported files, store blobs) or the Ollama manifest digest
    problem: str | None = None
    also: list[str] = field(default_factory=list)  # other refs for the same model
    adapter: str = ""  # digest of the LoRA adapter layer (store models made with ADAPTER)

    @property
    def source_label(self) -> str:
        return SOURCE_LABELS.get(self.source, self.source)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelList:
    models: list[ModelEntry]
    host: str
    ollama_running: bool
    ollama_version: str = ""
    store_dir: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"models": [m.to_dict() for m in self.models], "host": self.host,
                "ollama_running": self.ollama_running, "ollama_version": self.ollama_version,
                "store_dir": self.store_dir, "notes": self.notes}


# GGUF headers are cached by (path, size, mtime): listing again costs a stat per file.
_cache: dict[tuple[str, int, int], GGUFInfo | ModelFileDamaged] = {}
_cache_lock = threading.Lock()


def gguf_info(path: str | Path) -> GGUFInfo:
    """``read_gguf`` with a cache; raises ModelFileDamaged like it."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return read_gguf(p)
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is None:
        try:
            hit = read_gguf(p)
        except ModelFileDamaged as exc:
            hit = exc
        with _cache_lock:
            if len(_cache) > 512:
                _cache.clear()
            _cache[key] = hit
    if isinstance(hit, ModelFileDamaged):
        raise hit
    return hit


def engine_loaded_paths() -> set[str]:
    """GGUF paths that an engine of this process's pool has loaded."""
    pool = sys.modules.get("core.models.pool")  # never start the engine just to look
    loaded = getattr(pool, "loaded_paths", None)  # None too while another thread imports it
    return set(loaded()) if loaded is not None else set()


def _gguf_fields(entry: ModelEntry, path: Path) -> None:
    try:
        info = gguf_info(path)
    except ModelFileDamaged as exc:
        entry.problem = exc.reason
        return
    entry.family = entry.family or info.architecture
    entry.parameter_size = entry.parameter_size or info.parameter_size
    entry.quantization = entry.quantization or info.quantization
    entry.context_length = info.context_length


def collect(settings: Settings, *, client: OllamaClient | None = None,
            server_details: bool = True) -> ModelList:
    from core.models import library
    from core.models.ollama_client import OllamaClient
    from core.models.ollama_store import find_store

    client = client or OllamaClient.from_settings(settings)
    result = ModelList(models=[], host=client.host, ollama_running=False)
    loaded_paths = engine_loaded_paths()

    # 1. the server
    server_rows: dict[str, ModelEntry] = {}
    try:
        result.ollama_version = client.version()
        result.ollama_running = True
        loaded = {m.name for m in client.ps()}
        for m in client.list():
            row = ModelEntry(ref=f"ollama:{m.name}", name=m.name, source="ollama",
                             family=m.family, parameter_size=m.parameter_size,
                             quantization=m.quantization, file_size=m.size,
                             loaded=m.name in loaded, digest=m.digest)
            if server_details:
                try:
                    row.context_length = client.show(m.name).context_length
                except CorralError:
                    pass
            server_rows[m.name] = row
            result.models.append(row)
    except CorralError as exc:
        result.notes.append(
            f"Ollama is not running at {client.host} — start it or change the host in Settings"
            if not result.ollama_running else f"Ollama at {client.host}: {exc.sentence()}")

    # 2. the store on disk
    store = find_store(settings.ollama.store_dir)
    if store is not None:
        result.store_dir = str(store.root)
        for sm in store.models():
            layer = sm.model_layer
            path = layer.path if layer is not None else None
            twin = server_rows.get(sm.short_name)
            if twin is not None and twin.digest == sm.manifest_digest and not sm.problems:
                twin.also.append(f"store:{sm.short_name}")
                twin.path = str(path) if path else None
                twin.adapter = sm.adapter.digest if sm.adapter else ""
                continue
            row = ModelEntry(ref=f"store:{sm.short_name}", name=sm.short_name, source="store",
                             family=sm.family, parameter_size=sm.parameter_size,
                             quantization=sm.quantization, file_size=sm.size,
                             path=str(path) if path else None,
                             adapter=sm.adapter.digest if sm.adapter else "",
                             digest=layer.digest.split(":", 1)[-1] if layer else "")
            if sm.problems:
                row.problem = "; ".join(sm.problems)
            elif path is not None:
                _gguf_fields(row, path)
                row.loaded = str(path.resolve()) in loaded_paths
            result.models.append(row)

    # 3. imported GGUF files
    try:
        imported = library.load()
    except CorralError as exc:
        result.notes.append(exc.sentence())
        imported = []
    for im in imported:
        p = Path(im.path)
        row = ModelEntry(ref=im.name, name=im.name, source="gguf", file_size=im.size,
                         path=im.path, digest=im.sha256)
        if not p.is_file():
            row.problem = "the file is gone (moved or deleted)"
        else:
            _gguf_fields(row, p)
            row.loaded = str(p.resolve()) in loaded_paths
        result.models.append(row)
    return result


list_models = collect


def inspect_model(ref: str, settings: Settings, *,
                  client: OllamaClient | None = None,
                  compute_sha256: bool = False) -> dict[str, Any]:
    """Everything known about one model, as a JSON-able dict.

    Keys: ref, source, name, path, summary (GGUF fields), metadata (all GGUF keys, arrays
    summarised), modelfile parts (Ollama), sha256 (known, or computed with
    ``compute_sha256``), problems (list of sentences), and
    template_problem (why the chat template is unsafe, or None). A damaged GGUF raises
    ModelFileDamaged.
    """
    from core.models.ollama_client import OllamaClient
    from core.models.refs import parse_ref

    r = parse_ref(ref)
    out: dict[str, Any] = {"ref": str(r), "source": r.kind, "name": r.name, "path": None,
                           "summary": {}, "metadata": {}, "ollama": None, "sha256": None,
                           "problems": [], "template_problem": None}
    path: Path | None = None
    if r.kind == "ollama":
        client = client or OllamaClient.from_settings(settings)
        d = client.show(r.name)
        out["ollama"] = {"modelfile": d.modelfile, "template": d.template, "system": d.system,
                         "parameters": d.parameters, "license": d.license,
                         "capabilities": d.capabilities}
        out["summary"] = {"architecture": d.family, "parameter_size": d.parameter_size,
                          "quantization": d.quantization, "context_length": d.context_length,
                          "chat_template": d.model_info.get("tokenizer.chat_template")}
        out["metadata"] = d.model_info
    elif r.kind == "store":
        from core.errors import ModelNotFound
        from core.models.ollama_store import find_store

        store = find_store(settings.ollama.store_dir)
        if store is None:
            raise ModelNotFound(f"no Ollama model store was found for '{r.name}'")
        sm = store.find(r.name)
        out["name"] = sm.short_name
        out["problems"] = list(sm.problems)
        out["ollama"] = {"template": sm.text("template") or "", "system": sm.text("system") or "",
                         "parameters": sm.text("params") or "", "license": sm.text("license") or "",
                         "manifest": str(sm.manifest_path), "config": sm.config}
        path = sm.gguf_path()
        layer = sm.model_layer
        out["sha256"] = layer.digest.split(":", 1)[-1] if layer else None
    else:
        from core.models.refs import resolve

        resolved = resolve(r, settings)
        path = resolved.path
        out["name"] = resolved.name
        if resolved.source == "imported":
            from core.models import library

            entry = library.get(resolved.name)
            out["sha256"] = entry.sha256 if entry else None
    if path is not None:
        out["path"] = str(path)
        info = read_gguf(path)
        out["summary"] = info.summary()
        out["metadata"] = info.metadata
        out["array_lengths"] = info.array_lengths
        out["tensor_types"] = info.tensor_types
        if out["sha256"] is None and compute_sha256:
            from core.models.gguf_meta import sha256_file

            out["sha256"] = sha256_file(path)
    template = out["summary"].get("chat_template") if out["summary"] else None
    out["template_problem"] = template_problem(template) if template else None
    return out
