"""The fast embedder modes: the same sentence-transformers model, exported once, run by OpenVINO.

'fast' runs the exported model in bf16 where the CPU supports it (else fp32); 'fastest'
runs an int8 copy calibrated on the user's own documents. Pooling and normalisation are
done here in numpy, so the vectors match the standard embedder's (see export.py).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import CorralError, FeatureUnavailable
from core.rag.encoding import (
    Encoder,
    Notice,
    WordPieceTokens,
    minilm_path,
    model_max_tokens,
    parse_spec,
    pool,
)
from core.rag.export import (
    FAST_HINT,
    MODES,
    Progress,
    cache_root,
    check_supported,
    current_calibration,
    is_ready,
    load_calibration,
    prepare,
    read_info,
    shipped_root,
    transformer_folder,
    variant_dir,
)
from core.rag.loaders import is_supported, load_document, scan

log = logging.getLogger(__name__)
BATCH_SIZE = 16


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise FeatureUnavailable("OpenVINO is not installed", hint=FAST_HINT) from exc
    return openvino


def cpu_supports_bf16(core: Any) -> bool:
    try:
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except RuntimeError:  # OpenVINO's answer to a property an old or odd plugin lacks
        return False
    return "BF16" in [str(c).upper() for c in caps]


class FastEmbedder(WordPieceTokens):
    """A sentence-transformers model exported to OpenVINO ('fast' or 'fastest' mode).

    Tokens are counted exactly as by the standard embedder; vectors agree with it to a
    cosine of ~0.9999 ('fast') or ~0.99 ('fastest').
    """

    def __init__(self, folder: Path, mode: str, model_dir: Path, *, name: str, spec: str,
                 batch_size: int = BATCH_SIZE, threads: int = 0) -> None:
        ov = _openvino()
        self.folder = folder
        self.mode = mode
        self.spec = spec
        self.model_dir = model_dir
        self.max_tokens = model_max_tokens(folder)
        self._tokenizer_folder = str(transformer_folder(folder))
        self.tokenizer_name = f"wordpiece:{name}"
        self.batch_size = batch_size
        self.notice = ""
        info = read_info(model_dir)
        calib = info.get("calibration") or {}
        # an int8 model calibrated on other passages gives other vectors: a distinct name
        self.name = f"{name} int8-{str(calib['id'])[:8]}" if calib.get("id") else name
        self.calibration: dict[str, Any] = dict(calib)
        core = ov.Core()
        # OpenVINO's compiled-model cache: beside the export, or in the user's cache when the
        # export is one a packaged Corral ships read-only
        cache = cache_root() if _shipped(model_dir) else model_dir.parent.parent
        core.set_property({"CACHE_DIR": str(cache / "ov-cache")})
        self.precision = "bf16" if cpu_supports_bf16(core) else "f32"
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.precision,
                                  "PERFORMANCE_HINT": "THROUGHPUT"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self._compiled = core.compile_model(str(model_dir / "model.xml"), "CPU", config)
        except RuntimeError as exc:
            raise FeatureUnavailable(f"OpenVINO cannot run the {mode} embedder: {exc}") from exc
        self.variant = ("int8+" if mode == "fastest" else "") + self.precision
        self._encoder = Encoder(Path(self._tokenizer_folder) / "tokenizer.json", self.max_tokens,
                                [i.get_any_name() for i in self._compiled.inputs])
        self._dimension = int(self._compiled.outputs[0].get_partial_shape()[2].get_length())
        jobs = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._queue = ov.AsyncInferQueue(self._compiled, max(1, jobs))
        self._queue.set_callback(self._collect)
        self._out: np.ndarray = np.zeros((0, self._dimension), dtype=np.float32)
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return self._dimension

    def _collect(self, request: Any, rows: np.ndarray) -> None:
        try:
            mask = request.get_tensor("attention_mask").data
            self._out[rows] = pool(request.get_output_tensor(0).data, mask)
        except BaseException as exc:  # raised in embed(), not lost in OpenVINO's thread
            self._errors.append(exc)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        ids = self._encoder.encode(texts)
        # similar lengths share a batch: little padding (unsorted is ~3x slower)
        order = np.argsort([len(x) for x in ids], kind="stable")
        with self._lock:
            self._out = np.zeros((len(texts), self._dimension), dtype=np.float32)
            self._errors = []
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                self._queue.start_async(self._encoder.batch([ids[i] for i in rows]), rows)
            self._queue.wait_all()
            if self._errors:
                first = self._errors[0]
                if isinstance(first, RuntimeError):  # OpenVINO's own inference errors
                    raise CorralError(f"the {self.mode} embedder failed: {first}") from first
                raise first  # a bug: its own type and traceback, not a sentence
            return self._out


# --- building one --------------------------------------------------------------------------


def make_fast_embedder(folder: Path, mode: str, *, name: str, spec: str,
                       notice: Notice | None = None, progress: Progress | None = None,
                       calibration: Sequence[str] | None = None, calibration_id: str = "",
                       root: Path | None = None) -> FastEmbedder:
    """A FastEmbedder for ``folder``, exporting the model first when it is not cached.

    'fastest' is int8, calibrated: ``calibration_id`` names the calibration (a knowledge base
    records it; by default the one prepared last). A missing or damaged cache is rebuilt from
    the kept passages of that calibration, so the embedder keeps its name and no knowledge
    base has to be re-indexed. Raises FeatureUnavailable (OpenVINO or nncf missing,
    unsupported model, failed export, a calibration whose passages are gone);
    ``core.rag.embedder.make_embedder`` then falls back to the standard embedder.
    """
    if mode not in MODES:
        raise CorralError(f"unknown fast embedder mode {mode!r}")
    _openvino()
    check_supported(folder)
    cid = (calibration_id or current_calibration(folder, root)) if mode == "fastest" else ""
    target = _cached(folder, mode, root, cid)
    if is_ready(target):
        try:
            return FastEmbedder(folder, mode, target, name=name, spec=spec)
        except (FeatureUnavailable, OSError, ValueError) as exc:
            # a damaged cache (or one OpenVINO no longer reads) is rebuilt once
            log.warning("the cached %s embedder in %s is unusable (%s); exporting again",
                        mode, target, exc)
            if not _shipped(target):  # a packaged Corral's own files are never removed
                shutil.rmtree(target, ignore_errors=True)
    if cid and calibration is None:
        calibration = load_calibration(cid, root)
        if calibration is None:
            raise FeatureUnavailable(
                f"the passages the {mode} embedder was calibrated on ({cid[:8]}) are not kept "
                "here, so it cannot be rebuilt the same")
    if progress is None and notice is not None:
        notice(f"preparing the {mode} embedder: a one-time export that takes about a minute")
    started = time.monotonic()
    target = prepare(folder, mode, root=root, calibration=calibration, progress=progress,
                     make_current=not calibration_id)
    log.info("exported the %s embedder in %.1f s", mode, time.monotonic() - started)
    return FastEmbedder(folder, mode, target, name=name, spec=spec)


def _shipped(path: Path) -> bool:
    shipped = shipped_root()
    return shipped is not None and path.is_relative_to(shipped)


def _cached(folder: Path, mode: str, root: Path | None, cid: str) -> Path:
    """The cache folder of ``mode`` (and calibration ``cid``, full or an 8-character prefix);
    an older cache's single 'fastest' folder serves the calibration it holds."""
    target = variant_dir(folder, mode, root, cid)
    if not cid or is_ready(target):
        return target
    for other in sorted(target.parent.glob(f"{mode}-{cid}*")):
        if is_ready(other):
            return other
    legacy = variant_dir(folder, mode, root)
    try:
        if is_ready(legacy) and str(read_info(legacy)["calibration"]["id"]).startswith(cid):
            return legacy
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return target


def _folder_of(spec: str) -> Path:
    kind, detail = parse_spec(spec)
    if kind == "minilm":
        return minilm_path()
    if kind == "folder":
        return Path(detail)
    raise FeatureUnavailable(f"the fast modes apply to sentence-transformers models, not {spec}")


def fast_embedder_ready(mode: str, spec: str = "minilm", *, root: Path | None = None,
                        calibration_id: str = "") -> bool:
    """Whether nothing needs exporting before ``mode`` starts: else prepare_fast_embedder().

    True for the standard mode and for embedders the fast modes do not apply to (Ollama, GGUF).
    """
    if mode == "standard" or parse_spec(spec)[0] not in ("minilm", "folder"):
        return True
    try:
        folder = _folder_of(spec)
        cid = (calibration_id or current_calibration(folder, root)) if mode == "fastest" else ""
        return is_ready(_cached(folder, mode, root, cid))
    except (CorralError, OSError):
        return False


def prepare_fast_embedder(mode: str, spec: str = "minilm", *,
                          calibration: Sequence[str] | None = None,
                          progress: Progress | None = None, root: Path | None = None) -> Path:
    """Export the model for ``mode`` now (in a worker: ~30-60 s), reporting progress."""
    _openvino()
    folder = _folder_of(spec)
    return prepare(folder, mode, root=root or cache_root(), calibration=calibration,
                   progress=progress)


def calibration_sample(paths: Iterable[str | Path], *, max_passages: int = 64,
                       max_files: int = 40, budget_s: float = 10.0) -> list[str]:
    """Passages of ~150 words from the user's documents, for calibrating 'fastest'."""
    files, _missing = scan(paths)
    files = [f for f in files if is_supported(f)]
    files = files[:: max(1, len(files) // max_files)][:max_files]
    deadline = time.monotonic() + budget_s
    per_file = max(2, max_passages // max(1, len(files)))
    passages: list[str] = []
    for path in files:
        if time.monotonic() > deadline or len(passages) >= max_passages:
            break
        try:
            doc = load_document(path)
        except CorralError:
            continue
        words = " ".join(u.text for u in doc.units).split()
        for start in range(0, min(len(words), per_file * 150), 150):
            piece = " ".join(words[start:start + 150])
            if len(piece) > 40:
                passages.append(piece)
    return passages[:max_passages]
