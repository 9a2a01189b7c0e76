"""The export child process (``python -m core.rag.export_steps``, started by
``core.rag.export.prepare``) and its heavy steps.

torch -> ONNX (``torch.onnx.export``) -> OpenVINO IR with fp32 weights ('fast'), and that IR
quantized to int8 with nncf, calibrated on the user's passages ('fastest'). Progress goes to
the parent as JSON lines on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.config import atomic_write_text
from core.rag.encoding import Encoder, model_max_tokens, pool
from core.rag.export import (
    MODES,
    RECIPE,
    calibration_id,
    calibration_passages,
    is_ready,
    read_info,
    transformer_folder,
)

Report = Callable[[float | None, str], None]
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_CHECK_TEXTS = (
    "A short sentence.",
    "The committee reviewed the quarterly figures and recommended postponing the move. " * 6,
    "How do I reset my password?",
)


def export_fp32(folder: Path, out: Path, report: Report) -> list[str]:
    """Export the Transformer of ``folder`` to ``out``/model.xml; return its input names."""
    import warnings

    import openvino as ov
    import torch
    from transformers import AutoModel

    report(0.02, "loading the model for export")
    tf = transformer_folder(folder)
    model = AutoModel.from_pretrained(str(tf), attn_implementation="eager",
                                      local_files_only=True).eval()
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in INPUTS if n in accepted]
    encoder = Encoder(tf / "tokenizer.json", model_max_tokens(folder), names)

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: Any) -> Any:
            return self.inner(**dict(zip(names, tensors, strict=True))).last_hidden_state

    # the reference output comes first: after the legacy exporter ran, the torch model
    # (transformers 5) computes different values in this process
    batch = encoder.batch(encoder.encode(list(_CHECK_TEXTS)))
    with torch.no_grad():
        want = model(**{n: torch.from_numpy(batch[n]) for n in names}).last_hidden_state.numpy()
    dummy = encoder.batch(encoder.encode(["a short one", _CHECK_TEXTS[1]]))
    args = tuple(torch.from_numpy(dummy[n]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    report(0.15, "exporting the model (one time)")
    onnx_path = out / "model.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHiddenState(model), args, str(onnx_path), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, do_constant_folding=True, dynamo=False)
    report(0.45, "converting the model for OpenVINO")
    ov_model = ov.convert_model(str(onnx_path))
    ov.save_model(ov_model, str(out / "model.xml"), compress_to_fp16=False)
    onnx_path.unlink()
    for extra in out.glob("*.onnx.data"):
        extra.unlink()

    report(0.55, "checking the exported model")
    compiled = ov.Core().compile_model(str(out / "model.xml"), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(batch)[0]
    a, b = pool(want, batch["attention_mask"]), pool(got, batch["attention_mask"])
    cos = float(np.min(np.sum(a * b, axis=1)))
    if cos < 0.9999:
        raise RuntimeError(f"the exported model does not match the original (cosine {cos:.5f})")
    return names


def quantize_int8(folder: Path, fast: Path, out: Path, texts: Sequence[str],
                  report: Report) -> dict[str, Any]:
    """Quantize ``fast``/model.xml to int8 into ``out``/model.xml, calibrated on ``texts``."""
    import nncf
    import openvino as ov

    names = json.loads((fast / "info.json").read_text(encoding="utf-8"))["inputs"]
    encoder = Encoder(transformer_folder(folder) / "tokenizer.json", model_max_tokens(folder),
                      names)
    samples, source = calibration_passages(texts)
    calib_id = calibration_id(samples)
    items = [encoder.batch([ids]) for ids in encoder.encode(samples)]
    # nncf walks the data twice (smooth-quant statistics, then ranges and bias correction)
    calls = [0]
    expected = 2 * len(items)

    def transform(item: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls[0] += 1
        if calls[0] % 8 == 0:
            report(0.6 + 0.35 * min(1.0, calls[0] / expected),
                   f"calibrating int8 on {len(items)} passages ({source})")
        return item

    report(0.6, f"calibrating int8 on {len(items)} passages ({source})")
    model = ov.Core().read_model(str(fast / "model.xml"))
    quantized = nncf.quantize(model, nncf.Dataset(items, transform),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items))
    report(0.96, "saving the int8 model")
    ov.save_model(quantized, str(out / "model.xml"), compress_to_fp16=False)
    return {"id": calib_id, "samples": len(items), "source": source}


# --- the child process ------------------------------------------------------------------------


class _Reporter:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, fraction: float | None, text: str) -> None:
        self.send({"fraction": fraction, "text": text})

    def send(self, msg: dict[str, Any]) -> None:
        self.out.write(json.dumps(msg) + "\n")
        self.out.flush()


@contextlib.contextmanager
def _new_dir(final: Path, work: Path) -> Iterator[Path]:
    """A folder in ``work`` (beside ``final``) that becomes ``final`` when the block succeeds."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}-", dir=work))
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError:
            if not is_ready(final):  # another process won the race with a complete export
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _info(folder: Path, mode: str, **extra: Any) -> str:
    import openvino

    return json.dumps({
        "recipe": RECIPE, "mode": mode, "model": str(folder), "created": time.time(),
        "openvino": openvino.get_version(), **extra,
    }, indent=1)


def child_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.rag.export_steps")
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--mode", required=True, choices=MODES)
    parser.add_argument("--out", required=True, type=Path, help="the <model hash> folder")
    parser.add_argument("--work", required=True, type=Path, help="a folder beside --out's")
    parser.add_argument("--calibration", type=Path)
    parser.add_argument("--target", default="", help="the int8 model's folder name in --out")
    args = parser.parse_args(argv)
    # Progress goes to the real stdout; whatever libraries print goes to stderr.
    report = _Reporter(os.fdopen(os.dup(1), "w", encoding="utf-8"))
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        fast = args.out / "fast"
        if not is_ready(fast):
            with _new_dir(fast, args.work) as tmp:
                inputs = export_fp32(args.folder, tmp, report)
                atomic_write_text(tmp / "info.json", _info(args.folder, "fast", inputs=inputs))
        if args.mode == "fastest":
            texts: list[str] = []
            if args.calibration:
                texts = json.loads(args.calibration.read_text(encoding="utf-8"))
            final = args.out / (args.target or "fastest")
            with _new_dir(final, args.work) as tmp:
                calib = quantize_int8(args.folder, fast, tmp, texts, report)
                atomic_write_text(tmp / "info.json",
                                  _info(args.folder, "fastest", calibration=calib,
                                        inputs=read_info(fast).get("inputs")))
        report(1.0, "the fast embedder is ready")
        return 0
    except ImportError as exc:
        report.send({"error": f"{exc.name or exc} is not installed"})
        return 2
    except Exception as exc:  # reported to the parent as one sentence, the traceback on stderr
        report.send({"error": f"{type(exc).__name__}: {exc}"})
        raise


if __name__ == "__main__":
    sys.exit(child_main())
