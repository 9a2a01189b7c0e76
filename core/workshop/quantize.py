"""Quantize a GGUF with llama.cpp's own quantizer, in a child process, into the library.

The quantizer (``llama_model_quantize``) runs in ``core.workshop.quantize_child``; progress
and the tensors llama.cpp moved to another type come from its log. A quantized source goes
through an F16 copy first (see ``VIA_F16_REASON``). Cancel kills the child; the output is
written through :func:`core.workshop.output.library_output`, so no partial file is left.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import Cancelled, CorralError, NotEnoughSpace
from core.workshop import gguf_rewrite
from core.workshop.output import final_path, library_output

if TYPE_CHECKING:
    from core.config import Settings

#: progress(fraction, text); raising Cancelled from it stops the work
Progress = Callable[[float, str], None]

#: the types offered, with llama.cpp's file type number and about how many bits per weight
TYPES: dict[str, tuple[int, float]] = {
    "F16": (1, 16.0), "BF16": (32, 16.0), "Q8_0": (7, 8.5), "Q6_K": (18, 6.6),
    "Q5_K_M": (17, 5.7), "Q4_K_M": (15, 4.9), "Q4_0": (2, 4.5), "Q3_K_M": (12, 3.9),
    "Q2_K": (10, 3.4), "TQ2_0": (37, 2.06), "TQ1_0": (36, 1.69),
}
FLOAT_TYPES = {"F32", "F16", "BF16"}

VIA_F16_REASON = (
    "The source is already quantized ({source}). llama.cpp quantizes from full-precision "
    "weights and refuses to re-quantize quantized ones, so Corral first writes an F16 copy "
    "with gguf's dequantizer and quantizes that. The result cannot be better than the source: "
    "what the first quantization lost stays lost.")


@dataclass
class Fallback:
    tensor: str
    wanted: str
    used: str
    reason: str


@dataclass
class QuantizeResult:
    path: str
    type: str
    size: int
    source: str
    source_type: str
    source_sha256: str
    via_f16: bool
    note: str  # why it went through F16 (empty when it did not)
    fallbacks: list[Fallback] = field(default_factory=list)
    tensor_types: dict[str, int] = field(default_factory=dict)  # type -> weights stored so
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def type_names() -> list[str]:
    return list(TYPES)


def check_type(name: str) -> str:
    wanted = name.strip().upper()
    if wanted not in TYPES:
        raise CorralError(f"unknown quantization type '{name}'",
                          hint="Choose one of: " + ", ".join(TYPES) + ".")
    return wanted


def resolve_source(ref: str | Path, settings: Settings | None = None) -> Path:
    """The GGUF file behind a model reference (a path, an imported name, store:NAME)."""
    from core.config import Settings
    from core.models.refs import resolve

    resolved = resolve(str(ref), settings or Settings())
    if resolved.path is None:
        raise CorralError(f"{resolved.display} is served by Ollama, not a GGUF file here",
                          hint="Use store:NAME for the file in Ollama's store, or a .gguf path.")
    return resolved.path


def source_type(path: Path) -> str:
    """The file type the model declares (Q4_K_M, F16 ...), else the type holding most
    weights of its matrices."""
    from core.models.gguf_meta import file_type_name, read_gguf

    declared = file_type_name(read_gguf(path).file_type)
    if declared and not declared.startswith("unknown"):
        return declared
    counts: Counter[str] = Counter()
    for _name, kind, n in gguf_rewrite.iter_tensor_types(path):
        counts[kind] += n
    matrices = {k: v for k, v in counts.items() if k not in ("F32",)} or dict(counts)
    return max(matrices, key=lambda k: matrices[k]) if matrices else "F32"


def _is_quantized(path: Path) -> bool:
    return any(kind not in FLOAT_TYPES for _n, kind, _w in gguf_rewrite.iter_tensor_types(path))


def quantize(src: str | Path, type_name: str, out: Path | None = None, *,
             progress: Progress | None = None, n_threads: int | None = None,
             settings: Settings | None = None) -> QuantizeResult:
    """Quantize ``src`` to ``type_name`` and register the result in the library."""
    from core.models.gguf_meta import read_gguf

    wanted = check_type(type_name)
    path = resolve_source(src, settings)
    read_gguf(path)  # ModelFileDamaged with the reason, before anything is written
    via_f16 = _is_quantized(path)
    if via_f16:
        gguf_rewrite.check_readable(path)
    kind = source_type(path)
    n_weights = sum(w for _n, _k, w in gguf_rewrite.iter_tensor_types(path))
    bits = max(TYPES[wanted][1], 4.5 if wanted.startswith("TQ") else 0.0)  # fallbacks: Q4_0
    need = int(n_weights * bits / 8 * 1.1) + (8 << 20)
    f16_need = gguf_rewrite.float_copy_size(path) if via_f16 and wanted != "F16" else 0
    report = progress or (lambda _f, _t: None)
    started = time.perf_counter()
    hashing = _Hash(path)  # in parallel with the work; the result goes into provenance
    threads = n_threads or max(1, min(8, os.cpu_count() or 1))
    stem = path.stem.split(".")[0] if path.suffix == ".gguf" else path.name
    note = VIA_F16_REASON.format(source=kind) if via_f16 else ""
    provenance = {"kind": "quantize", "type": wanted, "source": str(path),
                  "source_sha256": hashing, "parents": [str(path)],
                  "parameters": {"type": wanted, "via_f16": via_f16, "n_threads": threads}}
    fallbacks: list[Fallback] = []
    with library_output(out, default_name=f"{stem}.{wanted}.gguf", need_bytes=need + f16_need,
                        provenance=provenance) as tmp:
        source = path
        f16 = tmp.with_name(tmp.name + ".f16")
        share = 0.4 if via_f16 else 0.0
        try:
            if via_f16 and wanted == "F16":  # the dequantized copy is the result
                gguf_rewrite.write_float_copy(
                    path, tmp, progress=lambda f, t: report(f, f"F16 copy: {t}"))
            else:
                if via_f16:
                    gguf_rewrite.write_float_copy(
                        path, f16, progress=lambda f, t: report(f * share, f"F16 copy: {t}"))
                    source = f16
                fallbacks = _run_child(source, tmp, wanted, threads,
                                       lambda f, t: report(share + f * (1 - share), t))
            provenance["source_sha256"] = digest = hashing.result()
        finally:
            f16.unlink(missing_ok=True)
    final = final_path(tmp)
    counts: Counter[str] = Counter()
    for _name, t, n in gguf_rewrite.iter_tensor_types(final):
        counts[t] += n
    report(1.0, "done")
    return QuantizeResult(
        path=str(final), type=wanted, size=final.stat().st_size, source=str(path),
        source_type=kind, source_sha256=digest, via_f16=via_f16, note=note,
        fallbacks=fallbacks, tensor_types=dict(counts),
        seconds=time.perf_counter() - started)


class _Hash:
    """SHA-256 of a file computed on a thread (hashlib releases the GIL while it hashes)."""

    def __init__(self, path: Path) -> None:
        from core.models.gguf_meta import sha256_file

        self._value = ""
        self._error: BaseException | None = None

        def work() -> None:
            try:
                self._value = sha256_file(path)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller in result()
                self._error = exc

        self._thread = threading.Thread(target=work, name="corral-hash", daemon=True)
        self._thread.start()

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise CorralError(f"cannot read the source to hash it: {self._error}")
        return self._value


def _run_child(src: Path, dst: Path, wanted: str, threads: int,
               progress: Progress) -> list[Fallback]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.workshop.quantize_child", str(src), str(dst),
         str(TYPES[wanted][0]), str(threads)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        start_new_session=True)
    lines: queue.Queue[bytes | None] = queue.Queue()
    tail: deque[str] = deque(maxlen=30)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.decode("utf-8", "replace").rstrip())

    threading.Thread(target=pump, daemon=True).start()
    threading.Thread(target=drain, daemon=True).start()
    fallbacks: list[Fallback] = []
    fraction, text, rc = 0.0, f"quantizing to {wanted}", None
    try:
        while True:
            progress(fraction, text)  # raises Cancelled when the user stops
            try:
                raw = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if raw is None:
                break
            msg = json.loads(raw)
            if "tensor" in msg:
                fraction = (int(msg["tensor"]) - 1) / max(1, int(msg["of"]))
                text = f"quantizing to {wanted}: tensor {msg['tensor']}/{msg['of']} {msg['name']}"
            elif "fallback" in msg:
                fb = msg["fallback"]
                fallbacks.append(Fallback(
                    fb["tensor"], fb["wanted"], fb["used"],
                    f"{fb['columns']} columns are not a multiple of {fb['block']}"))
            elif msg.get("done"):
                rc = int(msg["rc"])
    except BaseException:
        _kill(proc)
        raise
    code = proc.wait()
    if code == 0 and rc == 0:
        return fallbacks
    raise _child_error(code, rc, list(tail), dst)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    proc.wait()


def _out_of_room(dst: Path) -> bool:
    """Whether a failed write ran into a full disk or the process's file-size limit."""
    import shutil

    try:
        written = dst.stat().st_size if dst.exists() else 0
        if shutil.disk_usage(dst.parent).free < (1 << 20):
            return True
    except OSError:
        return False
    try:
        import resource
    except ImportError:  # Windows has no file-size limit
        return False
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return limit != resource.RLIM_INFINITY and written >= limit


def _child_error(code: int, rc: int | None, tail: list[str], dst: Path) -> CorralError:
    text = "\n".join(tail)
    if (code == -signal.SIGXFSZ or "No space left" in text or "File too large" in text
            or _out_of_room(dst)):
        return NotEnoughSpace(f"the disk is full (or a file-size limit was hit) while writing "
                              f"{final_path(dst).name}; the partial file was deleted")
    last = next((t for t in reversed(tail) if t.strip()), "")
    how = f"exit code {code}" if code >= 0 else f"signal {-code}"
    return CorralError(f"llama.cpp's quantizer failed ({how}{', rc ' + str(rc) if rc else ''})"
                       + (f": {last}" if last else ""))


__all__ = ["Cancelled", "Fallback", "QuantizeResult", "TYPES", "VIA_F16_REASON", "check_type",
           "quantize", "resolve_source", "source_type", "type_names"]
