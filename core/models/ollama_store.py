"""Read Ollama's on-disk model store (manifests -> blobs) without the server (FORMATS 5).

Corral only reads the store, never writes it. A manifest that points at a missing blob, a
blob whose size differs from the manifest, a digest that is not ``sha256:<64 hex>`` (such as
``../../etc/passwd``) or a path that leaves the store is reported as a problem and never
followed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ModelFileDamaged, ModelNotFound

DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MAX_MANIFEST_BYTES = 1 << 20
MAX_TEXT_LAYER_BYTES = 1 << 20

MODEL = "application/vnd.ollama.image.model"
CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_KINDS = {
    MODEL: "model",
    "application/vnd.ollama.image.projector": "projector",
    "application/vnd.ollama.image.adapter": "adapter",
    "application/vnd.ollama.image.template": "template",
    "application/vnd.ollama.image.prompt": "template",
    "application/vnd.ollama.image.system": "system",
    "application/vnd.ollama.image.params": "params",
    "application/vnd.ollama.image.messages": "messages",
    "application/vnd.ollama.image.license": "license",
    CONFIG: "config",
}
_DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def candidate_dirs(configured: str = "") -> list[Path]:
    """Where a store may be, in the order FORMATS 5.1 gives (settings first)."""
    out: list[Path] = []
    if configured.strip():
        out.append(Path(configured.strip()).expanduser())
    env = os.environ.get("OLLAMA_MODELS", "").strip().strip("\"'")
    if env:
        out.append(Path(env).expanduser())
    out.append(Path.home() / ".ollama" / "models")
    out.append(Path("/usr/share/ollama/.ollama/models"))
    return out


def find_store(configured: str = "") -> OllamaStore | None:
    """The first readable store, or None. A configured folder is used even if empty."""
    for i, path in enumerate(candidate_dirs(configured)):
        try:
            if (path / "manifests").is_dir() or (i == 0 and configured.strip() and path.is_dir()):
                return OllamaStore(path)
        except OSError:
            continue
    return None


@dataclass
class StoreName:
    """``[host/][namespace/]model[:tag]`` split into its parts (FORMATS 4.2)."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> StoreName:
        raw = text.strip()
        name, _, tag = raw.rpartition(":") if ":" in raw.rsplit("/", 1)[-1] else (raw, "", "")
        parts = name.split("/")
        if len(parts) == 1:
            host, ns, model = DEFAULT_REGISTRY, DEFAULT_NAMESPACE, parts[0]
        elif len(parts) == 2:
            host, ns, model = DEFAULT_REGISTRY, parts[0], parts[1]
        elif len(parts) == 3:
            host, ns, model = parts
        else:
            raise ModelNotFound(f"'{text}' is not a valid Ollama model name")
        tag = tag or DEFAULT_TAG
        for part in (host, ns, model, tag):
            if not _PART.match(part) or part in (".", ".."):
                raise ModelNotFound(f"'{text}' is not a valid Ollama model name")
        return cls(host, ns, model, tag)

    @property
    def short(self) -> str:
        """The name as ``ollama list`` shows it."""
        if self.host == DEFAULT_REGISTRY and self.namespace == DEFAULT_NAMESPACE:
            return f"{self.model}:{self.tag}"
        if self.host == DEFAULT_REGISTRY:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def relpath(self) -> Path:
        return Path(self.host, self.namespace, self.model, self.tag)


@dataclass
class StoreLayer:
    media_type: str
    digest: str
    size: int
    kind: str  # model, template, system, params, license, adapter, projector, config ...
    path: Path | None = None  # set only when the blob exists, has the right size, stays inside
    problem: str | None = None


@dataclass
class StoreModel:
    """One manifest of the store with its layers resolved to blobs."""

    name: StoreName
    manifest_path: Path
    manifest_digest: str  # sha256 of the manifest bytes, as /api/tags reports it
    layers: list[StoreLayer] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def short_name(self) -> str:
        return self.name.short

    def layer(self, kind: str) -> StoreLayer | None:
        return next((la for la in self.layers if la.kind == kind), None)

    @property
    def model_layer(self) -> StoreLayer | None:
        return self.layer("model")

    @property
    def size(self) -> int:
        layer = self.model_layer
        return layer.size if layer else 0

    def gguf_path(self) -> Path:
        """The GGUF blob llama.cpp can open, or ModelFileDamaged saying why not."""
        layer = self.model_layer
        where = f"Ollama model {self.short_name}"
        if layer is None:
            raise ModelFileDamaged(where, "its manifest has no model layer")
        if layer.path is None:
            raise ModelFileDamaged(where, layer.problem or "its model blob is unusable")
        try:
            with layer.path.open("rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            raise ModelFileDamaged(where, f"cannot read its model blob: {exc}") from None
        if magic != b"GGUF":
            raise ModelFileDamaged(where, "its model layer is not a single GGUF file "
                                          "(newer Ollama model formats cannot run in llama.cpp)")
        return layer.path

    @property
    def adapter(self) -> StoreLayer | None:
        """The LoRA adapter layer (``ollama create`` with ADAPTER), if the model has one."""
        return self.layer("adapter")

    def adapter_path(self) -> Path | None:
        """The LoRA GGUF llama.cpp must apply over the model (None: the model has none), or
        ModelFileDamaged naming the adapter when it cannot be applied: its blob missing or
        damaged, not a LoRA adapter for this model (core.models.lora), or more than one."""
        from core.models.lora import check_lora

        layers = [la for la in self.layers if la.kind == "adapter"]
        if not layers:
            return None
        if len(layers) > 1:
            raise ModelFileDamaged(f"Ollama model {self.short_name}",
                                   f"it has {len(layers)} LoRA adapters; llama.cpp in Corral "
                                   "applies one (run it through the Ollama server instead)")
        layer = layers[0]
        where = f"the LoRA adapter {layer.digest[:19]}… of Ollama model {self.short_name}"
        if layer.path is None:
            raise ModelFileDamaged(where, layer.problem or "its blob is unusable")
        check_lora(layer.path, self.gguf_path(), where)
        return layer.path

    def text(self, kind: str) -> str | None:
        """Contents of a text layer (template, system, params, license, messages)."""
        texts = []
        for la in self.layers:
            if la.kind == kind and la.path is not None and la.size <= MAX_TEXT_LAYER_BYTES:
                try:
                    texts.append(la.path.read_text(encoding="utf-8", errors="replace"))
                except OSError:
                    continue
        return "\n\n".join(texts) if texts else None

    @property
    def family(self) -> str:
        return str(self.config.get("model_family") or "")

    @property
    def parameter_size(self) -> str:
        return str(self.config.get("model_type") or "")

    @property
    def quantization(self) -> str:
        return str(self.config.get("file_type") or "")


class OllamaStore:
    """A store folder: ``manifests/<host>/<namespace>/<model>/<tag>`` and ``blobs/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"OllamaStore({str(self.root)!r})"

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    def _inside(self, path: Path, base: Path) -> bool:
        try:
            real = Path(os.path.realpath(path))
            return real.is_relative_to(Path(os.path.realpath(base)))
        except (OSError, ValueError):
            return False

    def manifest_files(self) -> Iterator[tuple[StoreName, Path]]:
        """Every ``<host>/<namespace>/<model>/<tag>`` file; nothing outside is visited."""
        top = self.manifests_dir
        for host in _children(top):
            for ns in _children(host):
                for model in _children(ns):
                    for tag in _children(model, files=True):
                        try:
                            name = StoreName(host.name, ns.name, model.name, tag.name)
                            StoreName.parse(f"{host.name}/{ns.name}/{model.name}:{tag.name}")
                        except ModelNotFound:
                            continue
                        yield name, tag

    def models(self) -> list[StoreModel]:
        return [self._read(name, path) for name, path in self.manifest_files()]

    def find(self, text: str) -> StoreModel:
        name = StoreName.parse(text)
        path = self.manifests_dir / name.relpath()
        if not path.is_file() or path.is_symlink():
            raise ModelNotFound(f"the Ollama store at {self.root} has no model '{name.short}'",
                                hint="`corral models list` shows the models Corral can see.")
        return self._read(name, path)

    def _read(self, name: StoreName, path: Path) -> StoreModel:
        import hashlib

        model = StoreModel(name=name, manifest_path=path, manifest_digest="")
        if path.is_symlink() or not self._inside(path, self.manifests_dir):
            model.problems.append("its manifest is a link that leaves the store; not followed")
            return model
        try:
            raw = path.read_bytes() if path.stat().st_size <= MAX_MANIFEST_BYTES else None
        except OSError as exc:
            model.problems.append(f"cannot read its manifest: {exc.strerror or exc}")
            return model
        if raw is None:
            model.problems.append("its manifest is implausibly large")
            return model
        model.manifest_digest = hashlib.sha256(raw).hexdigest()
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            model.problems.append("its manifest is not valid JSON")
            return model
        if not isinstance(doc, dict):
            model.problems.append("its manifest is not a JSON object")
            return model
        entries = doc.get("layers")
        if not isinstance(entries, list):
            model.problems.append("its manifest has no list of layers")
            entries = []
        config = doc.get("config")
        for entry in ([config] if isinstance(config, dict) else []) + entries:
            layer = self._layer(entry)
            model.layers.append(layer)
            if layer.problem:
                model.problems.append(f"{layer.kind} layer: {layer.problem}")
        cfg = model.layer("config")
        if cfg is not None and cfg.path is not None and cfg.size <= MAX_MANIFEST_BYTES:
            try:
                parsed = json.loads(cfg.path.read_bytes())
                if isinstance(parsed, dict):
                    model.config = parsed
            except (OSError, ValueError):
                model.problems.append("config layer: not valid JSON")
        if model.model_layer is None and not model.problems:
            model.problems.append("its manifest has no model layer")
        return model

    def _layer(self, entry: Any) -> StoreLayer:
        if not isinstance(entry, dict):
            return StoreLayer("", "", 0, "unknown", problem="a layer entry is not an object")
        media = str(entry.get("mediaType") or "")
        digest = str(entry.get("digest") or "")
        size = entry.get("size")
        kind = LAYER_KINDS.get(media, media.rsplit(".", 1)[-1] or "unknown")
        layer = StoreLayer(media, digest, size if isinstance(size, int) else -1, kind)
        match = _DIGEST.match(digest)
        if not match:
            layer.problem = f"digest {digest[:80]!r} is not a sha256 digest; not followed"
            return layer
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            layer.problem = f"blob {digest[:19]} has no valid size in the manifest"
            return layer
        blob = self.blobs_dir / f"sha256-{match.group(1)}"
        if not blob.exists() and not blob.is_symlink():
            old = self.blobs_dir / f"sha256:{match.group(1)}"  # very old installs
            blob = old if old.exists() else blob
        if blob.is_symlink() or (blob.exists() and not self._inside(blob, self.blobs_dir)):
            layer.problem = f"blob {digest[:19]} is a link that leaves the store; not followed"
            return layer
        try:
            actual = blob.stat().st_size
        except FileNotFoundError:
            layer.problem = f"blob {digest[:19]}… is missing from the store"
            return layer
        except OSError as exc:
            layer.problem = f"blob {digest[:19]}… cannot be read ({exc.strerror or exc})"
            return layer
        if not blob.is_file():
            layer.problem = f"blob {digest[:19]}… is not a file"
            return layer
        if actual != size:
            pct = f", {int(actual * 100 / size)}% present" if size and actual < size else ""
            layer.problem = (f"blob {digest[:19]}… is {actual:,} bytes but the manifest says "
                             f"{size:,}{pct}")
            return layer
        layer.path = blob
        return layer


def _children(folder: Path, *, files: bool = False) -> list[Path]:
    """Entries of ``folder`` (sorted), real directories (or files); links are skipped."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    out = []
    for e in entries:
        try:
            if e.is_symlink() and not files:
                continue
            if (e.is_file(follow_symlinks=False) or e.is_symlink()) if files else e.is_dir(
                    follow_symlinks=False):
                out.append(Path(e.path))
        except OSError:
            continue
    return out
