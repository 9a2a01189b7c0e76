"""`corral merge`: merge GGUF models (linear, SLERP, TIES, DARE, pass-through, MoE) into a new
GGUF in the library, from command-line words or a mergekit YAML file (--config)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from core.cli._common import ProgressBar, add_json_flag, load_settings, print_json

if TYPE_CHECKING:
    from core.workshop.merge_plan import MergeSpec

HELP = "merge models (linear, SLERP, TIES, DARE, pass-through, MoE)"
METHODS = ("linear", "slerp", "ties", "dare", "passthrough", "moe")  # as merge_plan.METHODS

EPILOG = """examples:
  corral merge --method slerp a.gguf b.gguf --t 0,0.5,1 --out merged.gguf
  corral merge --method ties ft1.gguf ft2.gguf --base base.gguf --density 0.5 --out m.gguf
  corral merge --method dare ft1.gguf ft2.gguf --base base.gguf --drop 0.9 --seed 1 --out m.gguf
  corral merge --method passthrough a.gguf b.gguf --layers 1:0-24,2:8-24 --out deep.gguf
  corral merge --method moe a.gguf b.gguf --experts experts.yaml --out moe.gguf
  corral merge --config mergekit.yaml --out merged.gguf

MODEL is any Corral model reference (a .gguf path, an imported name, store:NAME). The
result keeps the first model's tokenizer and chat template, lands in the library, and can go
straight to `corral quantize`."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("models", nargs="*", metavar="MODEL", help="the models to merge")
    parser.add_argument("--method", choices=METHODS, help="how to merge")
    parser.add_argument("--config", metavar="FILE",
                        help="a mergekit YAML file (instead of --method and MODEL...)")
    parser.add_argument("--t", metavar="T",
                        help="linear/SLERP weight of the second model: one number, or a "
                             "gradient list over the layers like 0,0.5,1 (default 0.5)")
    parser.add_argument("--base", metavar="REF",
                        help="TIES/DARE: the model the others were fine-tuned from; "
                             "MoE: where attention and embeddings come from (default: first)")
    parser.add_argument("--density", type=float, help="TIES: share of each task vector kept "
                                                      "(default 0.5)")
    parser.add_argument("--drop", type=float, help="DARE: share of each task vector dropped "
                                                   "at random (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="DARE/random gates: the seed")
    parser.add_argument("--layers", metavar="SPEC",
                        help="pass-through: MODEL:START-END ranges stacked in order, models "
                             "counted from 1, END excluded (e.g. 1:0-24,2:8-24)")
    parser.add_argument("--experts", metavar="FILE",
                        help="MoE: YAML/JSON with the positive_prompts of each expert")
    parser.add_argument("--experts-used", type=int, default=2, metavar="N",
                        help="MoE: experts per token (default 2)")
    parser.add_argument("--dtype", choices=("f16", "bf16", "f32"),
                        help="output tensor type (default f16; norms stay f32)")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="the new GGUF file, or a folder for it")
    add_json_flag(parser)


def build_spec(args: argparse.Namespace) -> MergeSpec:
    """The MergeSpec the arguments ask for (MergeRefused when they do not add up)."""
    from core.errors import MergeRefused
    from core.workshop.merge_plan import (
        MergeSpec,
        parse_layers,
        parse_t,
        read_experts,
        read_mergekit_config,
    )

    if args.config:
        if args.method or args.models:
            raise MergeRefused("--config names the method and models itself",
                               hint="Drop --method and MODEL..., or drop --config.")
        spec = read_mergekit_config(args.config)
    else:
        if not args.method:
            raise MergeRefused("no merge method given", hint="Add --method, or --config FILE.")
        spec = MergeSpec(args.method, list(args.models), base=args.base, seed=args.seed,
                         experts_used=args.experts_used)
        if args.method == "ties":
            spec.consensus, spec.density = True, 0.5
        if args.method == "dare":
            spec.drop = 0.5
        if args.method == "moe":
            spec.base = args.base or (args.models[0] if args.models else None)
            if args.experts:
                spec.experts, _sources = read_experts(args.experts)
        if args.layers:
            spec.slices = parse_layers(args.layers)
    if args.t is not None:
        spec.t = parse_t(args.t)
    if args.density is not None and spec.method == "dare":
        spec.drop = 1.0 - args.density  # mergekit's density: the share DARE keeps
    elif args.density is not None:
        spec.density = args.density
    if args.drop is not None:
        spec.drop = args.drop
    if args.dtype:
        spec.dtype = args.dtype
    if args.config and args.experts:
        spec.experts, _sources = read_experts(args.experts)
    spec.check()
    return spec


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.units import human_size
    from core.workshop.merge import merge

    spec = build_spec(args)
    bar = ProgressBar(f"merging ({spec.method})")
    result = merge(spec, Path(args.out).expanduser(), settings=load_settings(),
                   progress=lambda done, total: bar.update(done / total if total else None,
                                                           human_size(done)))
    bar.close("done")
    if args.json:
        print_json(result.to_dict())
        return 0
    extra = f", {result.experts} experts" if result.experts else ""
    print(f"merged {' + '.join(result.parents)} with {result.method} into {result.path}")
    print(f"  {result.tensors} tensors, {result.blocks} layers{extra}, "
          f"{human_size(result.bytes)} ({spec.dtype}), {result.seconds:.1f} s")
    for note in result.notes:
        print(f"  {note}")
    return 0
