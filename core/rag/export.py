"""One-time export of a sentence-transformers model for OpenVINO (the fast embedder modes).

``prepare()`` finds the cached export or builds it in a child process
(``python -m core.rag.export_steps``), so torch and nncf never load into the app itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from core.config import atomic_write_text, data_dir
from core.errors import CorralError, FeatureUnavailable

#: Bump when the export recipe changes: every cached export is then rebuilt.
RECIPE = 1
MODES = ("fast", "fastest")
#: Files of a model folder that do not change what the model computes.
_NOT_MODEL = {".gitattributes", "readme.md", "data_config.json", "train_script.py"}
_MAX_CALIBRATION = 64  # passages; each also gives one short query-like sentence

#: progress(fraction or None, text) as in desktop.jobs's job.progress.
Progress = Callable[[float | None, str], None]

FAST_HINT = "Install Corral's fast extra (pip install 'corral[fast]') or use the standard mode."


def cache_root() -> Path:
    return data_dir() / "cache" / "embedders"


# --- what a model folder is --------------------------------------------------------------


def transformer_folder(folder: Path) -> Path:
    """The folder of the Transformer module inside a sentence-transformers model."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FeatureUnavailable(f"{folder} is not a sentence-transformers model folder") from exc
    for m in modules:
        if str(m.get("type", "")).endswith("Transformer"):
            return folder / str(m.get("path", ""))
    raise FeatureUnavailable(f"the model in {folder} has no Transformer module")


def check_supported(folder: Path) -> None:
    """Raise FeatureUnavailable unless the fast modes reproduce this model exactly.

    They do mean pooling and normalisation in numpy, so the model must be Transformer +
    mean Pooling (+ Normalize) with a ``tokenizer.json``.
    """
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise FeatureUnavailable(f"{folder} is not a sentence-transformers model folder") from exc
    if not set(kinds) <= {"Transformer", "Pooling", "Normalize"} or "Pooling" not in kinds:
        raise FeatureUnavailable(
            f"the fast modes support mean-pooled models only; {folder.name} has "
            f"{', '.join(kinds)}"
        )
    pooling = next(m for m in modules if str(m.get("type", "")).endswith("Pooling"))
    try:
        cfg = json.loads((folder / str(pooling.get("path", "1_Pooling")) / "config.json")
                         .read_text(encoding="utf-8"))
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise FeatureUnavailable(f"the pooling settings of {folder.name} cannot be read") from exc
    others = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v and
              k != "pooling_mode_mean_tokens"]
    if not cfg.get("pooling_mode_mean_tokens") or others:
        raise FeatureUnavailable(f"the fast modes support mean pooling only, not {others}")
    if not (transformer_folder(folder) / "tokenizer.json").is_file():
        raise FeatureUnavailable(f"the model in {folder} has no tokenizer.json")


def model_fingerprint(folder: Path, root: Path | None = None) -> str:
    """SHA-256 of the files that define the model (and of the export recipe).

    Hashing ~90 MB costs a few tenths of a second, so the result is remembered per file
    size and modification time in ``fingerprints.json``.
    """
    root = root or cache_root()
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.name.lower() not in _NOT_MODEL and not p.name.startswith(".")
    )
    stamp = json.dumps(
        [RECIPE] + [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns]
                    for p in files]
    )
    memo_path = root / "fingerprints.json"
    try:
        memo: dict[str, Any] = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    key = str(folder.resolve())
    known = memo.get(key)
    if isinstance(known, dict) and known.get("stamp") == stamp:
        return str(known["sha256"])
    h = hashlib.sha256(f"corral-export-recipe-{RECIPE}\n".encode())
    for p in files:
        h.update(str(p.relative_to(folder)).encode("utf-8") + b"\0")
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    digest = h.hexdigest()
    memo[key] = {"stamp": stamp, "sha256": digest}
    with contextlib.suppress(OSError):
        atomic_write_text(memo_path, json.dumps(memo, indent=1))
    return digest


def shipped_root() -> Path | None:
    """The read-only exports a packaged Corral ships (it has no torch to export with)."""
    shipped = os.environ.get("CORRAL_BUNDLED_EMBEDDERS")
    return Path(shipped) if shipped else None


def variant_dir(folder: Path, mode: str, root: Path | None = None, calibration: str = "") -> Path:
    """Where the export of ``folder`` for ``mode`` lives: <root>/<model hash>/<mode>/, and
    for 'fastest' one folder per calibration, <mode>-<calibration id>/ (an older cache's
    single 'fastest' folder when no id is named). A packaged Corral ships read-only exports in
    the folder CORRAL_BUNDLED_EMBEDDERS names: one found there wins when no root is given."""
    shipped = shipped_root()
    if root is None and shipped is not None and not calibration:
        bundled = shipped / model_fingerprint(folder, shipped)[:16] / mode
        if is_ready(bundled):
            return bundled
    root = root or cache_root()
    base = root / model_fingerprint(folder, root)[:16]
    return base / (f"{mode}-{calibration}" if mode == "fastest" and calibration else mode)


# --- calibrations: the passages an int8 model was calibrated on, kept to rebuild it -------

_MIN_OWN_PASSAGES = 16
_MAX_PASSAGES = 64


def calibration_passages(texts: Sequence[str]) -> tuple[list[str], str]:
    """Calibration inputs: passages plus one short, query-like sentence from each.

    Fewer than 16 passages of the user's own are topped up with the built-in sample.
    """
    own = [t.strip() for t in texts if t and t.strip()]
    own = own[:: max(1, len(own) // _MAX_PASSAGES)][:_MAX_PASSAGES]
    source = "documents"
    passages = list(own)
    if len(own) < _MIN_OWN_PASSAGES:
        sample = Path(__file__).with_name("calibration_sample.txt").read_text(encoding="utf-8")
        for block in sample.split("\n\n"):  # paragraphs, and a block of short questions
            lines = [x.strip() for x in block.splitlines() if x.strip()]
            passages += lines if len(lines) > 3 else [" ".join(lines)] if lines else []
        source = "documents+built-in" if own else "built-in"
    short = []
    for p in passages:
        first = re.split(r"(?<=[.!?])\s+|\n", p, maxsplit=1)[0].strip()
        if first and first != p:
            short.append(first)
    return passages + short, source


def calibration_id(samples: Sequence[str]) -> str:
    """Names a calibration: the same passages give the same id, hence the same embedder."""
    return hashlib.sha256(json.dumps(list(samples)).encode("utf-8")).hexdigest()[:16]


def save_calibration(texts: Sequence[str], root: Path | None = None) -> str:
    """Keep the passages of a calibration (to rebuild a damaged cache the same); its id."""
    samples, source = calibration_passages(texts)
    cid = calibration_id(samples)
    folder = (root or cache_root()) / "calibrations"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cid}.json"
    if not path.is_file():
        atomic_write_text(path, json.dumps({"texts": list(texts), "source": source}))
    return cid


def load_calibration(cid: str, root: Path | None = None) -> list[str] | None:
    """The passages of the calibration ``cid`` (an 8-character prefix is enough), or None."""
    folder = (root or cache_root()) / "calibrations"
    for path in sorted(folder.glob(f"{cid}*.json")) if cid else []:
        try:
            texts = json.loads(path.read_text(encoding="utf-8"))["texts"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return [str(t) for t in texts]
    return None


def current_calibration(folder: Path, root: Path | None = None) -> str:
    """The calibration new 'fastest' knowledge bases use (the last one prepared)."""
    pointer = variant_dir(folder, "fast", root).parent / "fastest.current"
    try:
        return pointer.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _set_current(folder: Path, root: Path, cid: str) -> None:
    atomic_write_text(variant_dir(folder, "fast", root).parent / "fastest.current", cid)


def is_ready(path: Path) -> bool:
    return all((path / n).is_file() for n in ("model.xml", "model.bin", "info.json"))


def read_info(path: Path) -> dict[str, Any]:
    """The export's info.json; OSError or ValueError when it is missing or damaged."""
    info = json.loads((path / "info.json").read_text(encoding="utf-8"))
    if not isinstance(info, dict):
        raise ValueError(f"{path / 'info.json'} is not a JSON object")
    return info


# --- the parent side ----------------------------------------------------------------------


def prepare(folder: Path, mode: str, *, root: Path | None = None,
            calibration: Sequence[str] | None = None, progress: Progress | None = None,
            timeout_s: float = 1800.0, make_current: bool = True) -> Path:
    """The folder with the exported model for ``mode``; exports it first if needed.

    ``calibration``: passages of the user's own documents for the int8 ('fastest') model;
    without them (or with too few) a built-in sample is used. Each calibration has its own
    folder; ``make_current`` makes it the one new knowledge bases get. ``progress`` may raise
    (e.g. Cancelled) to stop the export; the child is then killed and nothing is cached.
    """
    if mode not in MODES:
        raise CorralError(f"unknown fast embedder mode {mode!r}")
    root = root or cache_root()
    cid = save_calibration(calibration or [], root) if mode == "fastest" else ""
    target = variant_dir(folder, mode, root, cid)
    if is_ready(target):
        if cid and make_current:
            _set_current(folder, root, cid)
        return target
    check_supported(folder)
    if mode == "fastest":
        import importlib.util

        if importlib.util.find_spec("nncf") is None:
            raise FeatureUnavailable("the fastest mode needs nncf, which is not installed",
                                     hint=FAST_HINT)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target.parent)
    if target.exists():  # damaged (a file missing): built anew
        shutil.rmtree(target, ignore_errors=True)
    # the child builds inside this folder, which goes away even when the child is killed
    with tempfile.TemporaryDirectory(prefix=".export-", dir=target.parent) as tmp:
        args = ["--folder", str(folder), "--mode", mode, "--out", str(target.parent),
                "--work", tmp, "--target", target.name]
        if calibration:
            calib = Path(tmp) / "calibration.json"
            calib.write_text(json.dumps(list(calibration)), encoding="utf-8")
            args += ["--calibration", str(calib)]
        _run_child(args, progress, timeout_s)
    if not is_ready(target):
        raise FeatureUnavailable(f"the {mode} embedder export left no model in {target}")
    if cid and make_current:  # new 'fastest' knowledge bases use the last one prepared
        _set_current(folder, root, cid)
    return target


def _remove_stale(folder: Path, age_s: float = 3600.0) -> None:
    """Remove half-built exports of killed runs (hidden temp folders older than an hour)."""
    for tmp in folder.glob(".*-*"):
        with contextlib.suppress(OSError):
            if tmp.is_dir() and time.time() - tmp.stat().st_mtime > age_s:
                shutil.rmtree(tmp, ignore_errors=True)


def _run_child(args: list[str], progress: Progress | None, timeout_s: float) -> None:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("NNCF_CI", "1")  # offline by default: nncf sends no telemetry
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.rag.export_steps", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        encoding="utf-8", errors="replace", start_new_session=True,
    )
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=40)
    drain = threading.Thread(target=_drain, args=(proc.stderr, tail), daemon=True)
    drain.start()
    error = ""
    watchdog = threading.Timer(timeout_s, proc.kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "error" in msg:
                error = str(msg["error"])
            elif progress is not None and "text" in msg:
                frac = msg.get("fraction")
                progress(None if frac is None else float(frac), str(msg["text"]))
        proc.wait(timeout=60)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        watchdog.cancel()
        drain.join(timeout=5)
    if proc.returncode != 0 and not error and time.monotonic() - started >= timeout_s:
        error = f"it took longer than {timeout_s:.0f} s"
    if proc.returncode != 0:
        detail = error or next((t for t in reversed(tail) if t.strip()), f"exit {proc.returncode}")
        raise FeatureUnavailable(f"exporting the embedder for OpenVINO failed: {detail}",
                                 hint=FAST_HINT if "not installed" in detail else None)


def _drain(stream: IO[str] | None, tail: deque[str]) -> None:
    if stream is None:
        return
    for line in stream:
        tail.append(line.rstrip())
