"""Settings and data directories: one TOML file, written atomically, with a schema version.

All user data lives under one directory: ``CORRAL_HOME`` if set, else the platform's
user data dir. Settings live in ``settings.toml`` in that same directory when
``CORRAL_HOME`` is set (tests, portable installs), else in the platform config dir.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import SettingsError

SCHEMA_VERSION = 1
APP_NAME = "corral"


def data_dir() -> Path:
    """The directory that holds history, knowledge bases, logs and caches."""
    home = os.environ.get("CORRAL_HOME")
    if home:
        path = Path(home).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    if os.environ.get("CORRAL_HOME"):
        return data_dir()
    import platformdirs

    path = Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings_path() -> Path:
    return config_dir() / "settings.toml"


@dataclass
class OllamaSettings:
    host: str = ""  # empty: OLLAMA_HOST, else 127.0.0.1:11434
    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    store_dir: str = ""  # empty: probe OLLAMA_MODELS, ~/.ollama/models, /usr/share/ollama/...


@dataclass
class EngineSettings:
    n_threads: int = 0  # 0: let Corral choose (physical cores, at most 8)
    n_ctx: int = 4096
    n_gpu_layers: int = 0
    max_models: int = 1  # chat models kept loaded at once (the guard has its own slot)
    keep_alive_s: float = 300.0  # an idle model unloads after this; 0: only when room is needed


@dataclass
class StoreSettings:
    mode: str = "embedded"  # "embedded" (PersistentClient under data dir) or "server"
    host: str = "127.0.0.1"
    port: int = 8000


def _default_embedder_mode() -> str:
    """'standard', or 'fast' where torch is left out (the bundle ships that mode's export)."""
    import importlib.util

    return "standard" if importlib.util.find_spec("torch") is not None else "fast"


@dataclass
class EmbedderSettings:
    default: str = "minilm"  # "minilm", a sentence-transformers folder, ollama:NAME, a .gguf
    mode: str = field(default_factory=_default_embedder_mode)  # "standard", "fast", "fastest"


@dataclass
class SafetySettings:
    enabled: bool = False
    guard_model: str = ""  # a model reference
    guard_version: str = "llama-guard-3"  # llama-guard-1/-2/-3/-3-1b
    check_input: bool = True
    check_output: bool = True
    check_documents: bool = True  # retrieved passages, in one call before the prompt
    #: when the guard cannot be built, cannot answer, or answers something not understood:
    #: "block" the message (a passage is left out, an answer hidden) or "warn" and go on
    when_unavailable: str = "block"
    #: "auto" (hold while any category blocks), "stream" (show as it comes, checked after) or
    #: "hold" (shown once the guard has checked it)
    answers: str = "auto"
    timeout_s: float = 120.0  # a guard check that takes longer counts as unavailable
    policy: dict[str, str] = field(default_factory=dict)  # "version:code" -> block|warn|log
    scan_code: bool = True
    audit: bool = True  # record every check in the safety audit log
    ollama_mode: str = "raw"  # "raw" (exact prompt) or "template" (corrected llama-guard3 copy)


@dataclass
class ChatSettings:
    default_model: str = ""
    system_prompt: str = ""
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    max_tokens: int = 512
    prompt_format: str = "auto"  # auto, llama2, codellama, codellama70b, model
    special_tags: str = "refuse"  # control tags inside messages: refuse (Meta) or defuse
    drop_oldest: bool = False  # on context overflow, drop the oldest turns instead of asking
    documents_k: int = 4  # "Use documents": passages retrieved per turn
    documents_threshold: float = 0.1  # ... and the least cosine similarity one must have


@dataclass
class ServeSettings:
    """`corral serve` and the window's Serve switch (issue 18)."""

    enabled: bool = False  # the window serves while it runs
    host: str = "127.0.0.1"  # any address other than loopback requires a token
    port: int = 8484
    token: str = ""  # empty: CORRAL_SERVE_TOKEN, else none (loopback only)
    history: bool = False  # conversations made through the API go into history
    cors_origins: list[str] = field(default_factory=list)  # empty: CORS off


@dataclass
class UiSettings:
    geometry: str = ""  # base64 of QWidget.saveGeometry()
    last_page: str = "Models"


@dataclass
class Settings:
    schema_version: int = SCHEMA_VERSION
    ollama: OllamaSettings = field(default_factory=OllamaSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    embedder: EmbedderSettings = field(default_factory=EmbedderSettings)
    safety: SafetySettings = field(default_factory=SafetySettings)
    chat: ChatSettings = field(default_factory=ChatSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    ui: UiSettings = field(default_factory=UiSettings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Settings:
        settings: Settings = _build(cls, _migrate(raw), "")
        return settings

    # --- persistence ---------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        """Read settings; a missing file gives defaults, a broken one a SettingsError."""
        path = path or settings_path()
        if not path.exists():
            return cls()
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read settings {path}: {exc}") from exc
        version = raw.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SettingsError(
                f"settings {path} have schema_version {version!r}, newer than this Corral "
                f"understands ({SCHEMA_VERSION})"
            )
        return cls.from_dict(raw)

    def save(self, path: Path | None = None) -> Path:
        import tomli_w

        path = path or settings_path()
        self.schema_version = SCHEMA_VERSION
        atomic_write_text(path, tomli_w.dumps(self.to_dict()))
        return path


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Settings written by an older Corral, in today's names: ``safety.fail_closed`` (a bool)
    became ``safety.when_unavailable`` ("block" or "warn")."""
    safety = raw.get("safety")
    if not isinstance(safety, dict) or "fail_closed" not in safety:
        return raw
    safety = dict(safety)
    old = safety.pop("fail_closed")
    if "when_unavailable" not in safety:
        safety["when_unavailable"] = "warn" if old is False else "block"
    return {**raw, "safety": safety}


def _build(cls: Any, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise SettingsError(f"settings section {where or '(top)'} must be a table")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        value = raw[f.name]
        name = f"{where}.{f.name}" if where else f.name
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[f.name] = _build(type(default), value, name)
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise SettingsError(f"setting {name} should be {type(default).__name__}, got {value!r}")
        kwargs[f.name] = value
    return cls(**kwargs)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that a crash leaves either the old or the new content, never half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
