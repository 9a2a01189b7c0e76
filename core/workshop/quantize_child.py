"""The child process that runs llama.cpp's quantizer (``llama_model_quantize``).

Run as ``python -m core.workshop.quantize_child SRC DST FTYPE NTHREADS``. It reports on a
private copy of stdout as JSON lines, read from llama.cpp's own log: ``{"tensor": i, "of": n,
"name": ...}`` per tensor, ``{"fallback": {...}}`` for each tensor llama.cpp moved to another
type, and ``{"done": true, "rc": rc}`` at the end. The parent kills it to cancel.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import sys
from typing import Any, BinaryIO

_TENSOR = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
_FALLBACK = re.compile(r"warning:\s+(\S+)\s+- ncols\s+(\d+) not divisible by (\d+) "
                       r"\(required for type\s+(\S+)\) -> falling back to\s+(\S+)")


class _Reporter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.buffer = ""

    def send(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj).encode() + b"\n")
        self.out.flush()

    def log(self, text: str) -> None:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            sys.stderr.write(line + "\n")
            if m := _TENSOR.match(line):
                self.send({"tensor": int(m[1]), "of": int(m[2]), "name": m[3]})
            elif m := _FALLBACK.search(line):
                self.send({"fallback": {"tensor": m[1], "columns": int(m[2]),
                                        "block": int(m[3]), "wanted": m[4].upper(),
                                        "used": m[5].upper()}})


def main(argv: list[str]) -> int:
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # whatever llama.cpp prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    import llama_cpp

    src, dst, ftype, threads = argv[0], argv[1], int(argv[2]), int(argv[3])
    reporter = _Reporter(proto)

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator,misc]
    def on_log(_level: int, text: bytes, _user: Any) -> None:
        reporter.log(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    rc = int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))
    reporter.log("\n")
    reporter.send({"done": True, "rc": rc})
    return 0 if rc == 0 else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
