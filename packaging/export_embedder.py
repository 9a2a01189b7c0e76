"""Export the bundled MiniLM for the 'fast' embedder mode once, for the bundle to ship.

Run by packaging/build with the development venv's Python (the export needs torch; the bundle
does not): ``python packaging/export_embedder.py MODEL_DIR OUT``. MODEL_DIR is the model
folder as the bundle ships it, without its torch weights (model.safetensors), so the export is
filed under that folder's fingerprint: OUT/<fingerprint>/fast/, which is where
``core.rag.export.variant_dir`` looks when CORRAL_BUNDLED_EMBEDDERS names OUT.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from core.errors import CorralError
from core.rag.export import is_ready, model_fingerprint, prepare

#: left out of the bundle: the fast mode reads the OpenVINO export instead
WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def main(model_dir: Path, out: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="corral-export-") as tmp:
        shipped = Path(tmp) / "model"
        shutil.copytree(model_dir, shipped, ignore=shutil.ignore_patterns(*WEIGHTS))
        key = model_fingerprint(shipped, Path(tmp))[:16]
        try:
            made = prepare(model_dir, "fast", root=Path(tmp) / "cache",
                           progress=lambda f, text: print(f"  export: {text}", flush=True))
        except CorralError as exc:  # e.g. no OpenVINO or torch in the development venv
            print(f"export_embedder: {exc.sentence()}", file=sys.stderr)
            return 1
        target = out / key / "fast"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(made, target)
    if not is_ready(target):
        print(f"export_embedder: no usable export in {target}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"fast embedder export: {target} ({size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: export_embedder.py MODEL_DIR OUT")
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
