"""The heavy steps of the embedder export, run only in the export child process.

torch -> ONNX (``torch.onnx.export``) -> OpenVINO IR with fp32 weights ('fast'), and that IR
quantized to int8 with nncf, calibrated on the user's passages ('fastest').
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.rag.export import transformer_folder
from core.rag.fast_embedder import Encoder, model_max_tokens, pool

Report = Callable[[float | None, str], None]
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_MIN_OWN_PASSAGES = 16
_MAX_PASSAGES = 64
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


def quantize_int8(folder: Path, fast: Path, out: Path, texts: Sequence[str],
                  report: Report) -> dict[str, Any]:
    """Quantize ``fast``/model.xml to int8 into ``out``/model.xml, calibrated on ``texts``."""
    import nncf
    import openvino as ov

    names = json.loads((fast / "info.json").read_text(encoding="utf-8"))["inputs"]
    encoder = Encoder(transformer_folder(folder) / "tokenizer.json", model_max_tokens(folder),
                      names)
    samples, source = calibration_passages(texts)
    calib_id = hashlib.sha256(json.dumps(samples).encode("utf-8")).hexdigest()[:16]
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
