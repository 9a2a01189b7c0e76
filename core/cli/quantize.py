"""`corral quantize SRC --type T [--out PATH] [--json]`: llama.cpp's quantizer, in a child
process, into the library with provenance."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli._common import ProgressBar, add_json_flag, load_settings, print_json

HELP = "quantize a GGUF model with llama.cpp's quantizer (F16 down to TQ1_0)"
TYPES = ("F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K",
         "TQ2_0", "TQ1_0")  # as core.workshop.quantize.TYPES, without importing it


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="a .gguf path, an imported model, store:NAME")
    parser.add_argument("--type", required=True, type=str.upper, choices=TYPES, metavar="T",
                        help="target type: " + ", ".join(TYPES))
    parser.add_argument("--out", type=Path, default=None,
                        help="output file or folder (default: Corral's models folder)")
    parser.add_argument("--threads", type=int, default=None, help="quantizer threads")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from core.workshop.quantize import quantize

    bar = ProgressBar(f"{args.type}")
    try:
        result = quantize(args.src, args.type, args.out, progress=bar.update,
                          n_threads=args.threads, settings=load_settings())
    finally:
        bar.close()
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"wrote {result.path} ({result.size / 2**20:.1f} MiB, {result.type}) "
          f"in {result.seconds:.1f} s")
    if result.via_f16:
        print(f"note: {result.note}")
    if result.fallbacks:
        used = sorted({f.used for f in result.fallbacks})
        print(f"{len(result.fallbacks)} tensors did not fit {result.type} and fell back to "
              f"{', '.join(used)} (llama.cpp's choice):")
        for f in result.fallbacks[:8]:
            print(f"  {f.tensor}: {f.used} ({f.reason})")
        if len(result.fallbacks) > 8:
            print(f"  ... and {len(result.fallbacks) - 8} more (--json lists them all)")
    total = sum(result.tensor_types.values()) or 1
    shares = ", ".join(f"{k} {v / total:.1%}" for k, v in
                       sorted(result.tensor_types.items(), key=lambda kv: -kv[1]))
    print(f"weights stored as: {shares}")
    return 0
