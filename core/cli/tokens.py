"""`corral tokens`: how one or more tokenizers split a text, token by token."""

from __future__ import annotations

import argparse
import sys

from core.cli._common import add_json_flag, load_settings, print_json, read_input

HELP = "show how tokenizers split a text (ids, offsets, exact bytes, special flags)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", metavar="TEXT", help="the text to split, or '-' to read standard input")
    parser.add_argument(
        "--tokenizer", "-t", action="append", metavar="REF", dest="tokenizers",
        help="a model (.gguf path, store:NAME, imported name), 'wordpiece' (the embedder's "
        "MiniLM tokenizer) or 'bpe' (trained on the text or --train FILE); repeat to compare. "
        "Default: wordpiece and bpe",
    )
    parser.add_argument("--train", metavar="FILE", help="text file the 'bpe' tokenizer learns from")
    parser.add_argument("--bpe-vocab", type=int, default=1000, metavar="N",
                        help="vocabulary size of the trained BPE (default 1000)")
    parser.add_argument("--special", action="store_true",
                        help="read the text as a rendered prompt: a model's special-token texts "
                        "(<|im_start|>, <s> ...) become its special tokens, as the engine reads "
                        "them (default: plain text, special-token parsing off)")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from core.analysis.token_sources import open_tokenizer
    from core.analysis.tokens import differing_cuts, token_summary

    text = read_input("-") if args.text == "-" else args.text
    train = read_input(args.train) if args.train else text
    refs = args.tokenizers or ["wordpiece", "bpe"]
    settings = load_settings()
    results = []
    for ref in refs:
        tok = open_tokenizer(ref, settings, train_text=train, bpe_vocab_size=args.bpe_vocab,
                             parse_special=args.special)
        results.append(tok.tokenize(text))
    cuts = sorted(differing_cuts(results))
    if args.json:
        print_json({
            "text": text,
            "tokenizers": [r.to_json() for r in results],
            "differing_cuts": cuts,
        })
        return 0
    out = sys.stdout
    for r in results:
        note = "" if r.lossless else "  (not lossless: spans do not rebuild the text)"
        out.write(f"{r.tokenizer} [{r.kind}]: {token_summary(r)}{note}\n")
        out.write(f"  {'id':>7}  {'chars':>9}  {'bytes':<16} piece\n")
        for s in r.spans:
            flag = "  special" if s.special else ""
            hexed = s.bytes.hex(" ")
            hexed = hexed if len(hexed) <= 16 else hexed[:15] + "…"
            out.write(f"  {s.id:>7}  {s.start:>4}-{s.end:<4}  {hexed:<16} {s.piece!r}{flag}\n")
        out.write("\n")
    if len(results) > 1:
        where = ", ".join(map(str, cuts)) if cuts else "none"
        out.write(f"Character positions where the tokenizers cut differently: {where}\n")
    return 0
