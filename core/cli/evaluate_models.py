"""`corral evaluate models REF... --text FILE|--kb NAME [--json]`: size, bits per weight, load
time, speed, perplexity, and KL divergence / top-1 agreement against the first REF."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli._common import ProgressBar, add_json_flag, load_settings, print_json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("refs", nargs="+", metavar="REF",
                        help="models to compare; the first is the reference")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", type=Path, metavar="FILE", help="evaluate on this text file")
    source.add_argument("--kb", metavar="NAME", help="evaluate on a knowledge base's text")
    parser.add_argument("--ctx", type=int, default=512,
                        help="tokens per chunk, at most 512; the second half of each is scored "
                             "(default 512)")
    parser.add_argument("--max-tokens", type=int, default=2048,
                        help="read at most this many tokens of the text (default 2048)")
    parser.add_argument("--gen-tokens", type=int, default=32,
                        help="tokens generated to time generation (default 32; 0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from core.models.pool import close_all
    from core.workshop.measure import evaluate_models, text_from_file, text_from_kb

    settings = load_settings()
    if args.kb:
        text, source = text_from_kb(args.kb, settings), f"knowledge base {args.kb}"
    else:
        text, source = text_from_file(args.text), str(args.text)
    bar = ProgressBar("evaluate")
    try:
        ev = evaluate_models(args.refs, text, text_source=source, n_ctx=args.ctx,
                             max_tokens=args.max_tokens, gen_tokens=args.gen_tokens,
                             n_threads=args.threads, progress=bar.update, settings=settings)
    finally:
        bar.close()
        close_all()
    if args.json:
        print_json(ev.to_dict())
        return 0
    print(f"{ev.tokens} tokens of {source}, chunks of {ev.chunk}; KL and top-1 against "
          f"{ev.variants[0].name}")
    head = ("model", "type", "MiB", "bpw", "load s", "prompt t/s", "gen t/s", "PPL", "KL",
            "top-1", "ternary")
    rows = [head]
    for v in ev.variants:
        rows.append((v.name, v.file_type, f"{v.size / 2**20:.1f}", f"{v.bits_per_weight:.2f}",
                     f"{v.load_s:.2f}", f"{v.prompt_tps:.0f}", f"{v.gen_tps:.0f}",
                     f"{v.perplexity:.3f}",
                     "-" if v.kl_divergence is None else f"{v.kl_divergence:.4f}",
                     "-" if v.top1_agreement is None else f"{v.top1_agreement:.1%}",
                     "-" if v.ternary_share is None else f"{v.ternary_share:.1%}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return 0
