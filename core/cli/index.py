"""`corral index PATH... --kb NAME`: index files and folders into a knowledge base."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core.cli._common import ProgressBar, add_json_flag, load_settings, print_json

HELP = "index files and folders into a knowledge base"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    parser.add_argument("--kb", required=True, help="knowledge base (created if missing)")
    parser.add_argument("--embedder-mode", default="", choices=["", "standard", "fast", "fastest"],
                        help="embedder speed mode for a new knowledge base or with --rebuild")
    parser.add_argument("--embedder", default="", help="embedder for a new knowledge base")
    parser.add_argument("--rebuild", action="store_true",
                        help="index everything again into a new collection; the old one "
                             "serves until the new one is complete")
    parser.add_argument("--keep-missing", action="store_true",
                        help="keep chunks of files that no longer exist")
    parser.add_argument("--batch", type=int, default=128, help="chunks per embedding batch")
    add_json_flag(parser)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    m, s = divmod(int(seconds + 0.5), 60)
    return f"ETA {m}:{s:02d}"


def prepare_fast(mode: str, spec: str, paths: list[str]) -> None:
    """The fast modes export the model once (issue 8): show progress, calibrate 'fastest'
    on the documents being indexed. On failure, make_embedder says why and falls back."""
    if mode not in ("fast", "fastest"):
        return
    from core.errors import CorralError
    from core.rag.fast_embedder import (
        calibration_sample,
        fast_embedder_ready,
        prepare_fast_embedder,
    )

    if fast_embedder_ready(mode, spec or "minilm"):
        return
    bar = ProgressBar(f"preparing the {mode} embedder (one time)")
    try:
        sample = calibration_sample(paths) if mode == "fastest" else None
        prepare_fast_embedder(mode, spec or "minilm", calibration=sample, progress=bar.update)
        bar.close("done")
    except CorralError:
        bar.close("failed")


def run(args: argparse.Namespace) -> int:
    from core.errors import KnowledgeBaseNotFound
    from core.rag.embedder import shared_embedder
    from core.rag.indexing import IndexJob
    from core.rag.knowledge_base import create_kb, open_kb

    def notice(text: str) -> None:
        print(f"note: {text}", file=sys.stderr)

    settings = load_settings()
    try:
        kb = open_kb(args.kb, settings=settings)
    except KnowledgeBaseNotFound:
        prepare_fast(args.embedder_mode or settings.embedder.mode,
                     args.embedder or settings.embedder.default, args.paths)
        kb = create_kb(args.kb, embedder=args.embedder, mode=args.embedder_mode,
                       settings=settings, notice=notice)
        if not args.json:
            print(f"created knowledge base '{args.kb}'", file=sys.stderr)
    emb = None
    if args.rebuild or args.embedder_mode or args.embedder:
        prepare_fast(args.embedder_mode or kb.mode, args.embedder or kb.embedder_spec, args.paths)
        emb = shared_embedder(args.embedder or kb.embedder_spec,
                              args.embedder_mode or kb.mode, notice=notice,
                              ollama=settings.ollama)
    paths = [str(Path(p).expanduser().absolute()) for p in args.paths]
    if args.rebuild:  # everything the knowledge base holds, plus what is named now
        paths += [p for p in kb.catalogue.sources() if p not in paths]
    job = IndexJob(kb, paths, embedder=emb, batch_size=args.batch,
                   remove_missing=not args.keep_missing, rebuild=args.rebuild)
    bar = ProgressBar(f"indexing into {args.kb}")
    counts = {"indexed": 0, "unchanged": 0, "skipped": 0, "removed": 0}
    started = time.monotonic()
    health_ok = True
    last = None
    try:
        for ev in job:
            last = ev
            if ev.kind == "file":
                counts[ev.status] = counts.get(ev.status, 0) + 1
                if args.json:
                    print_json({"event": "file", "path": ev.path, "status": ev.status,
                                "reason": ev.reason, "chunks": ev.file_chunks}, lines=True)
                elif ev.status == "skipped" or ev.reason:  # e.g. "3 of 120 pages have no text"
                    bar.close() if bar.enabled else None
                    print(f"{'skipped ' if ev.status == 'skipped' else ''}{ev.path}: {ev.reason}")
            elif ev.kind == "health":
                health_ok = ev.ok
                if args.json:
                    print_json({"event": "health", "ok": ev.ok, "reason": ev.reason}, lines=True)
                elif not ev.ok:
                    print(f"warning: {ev.reason} (corral index --rebuild)", file=sys.stderr)
            bar.update(ev.fraction, f"{ev.files_done}/{ev.files_total} files  {ev.chunks} chunks  "
                       f"{ev.chunks_per_s:.1f} chunks/s  {_fmt_eta(ev.eta_s)}")
    except KeyboardInterrupt:
        job.cancel()
        for _ev in job:
            pass
        bar.close("cancelled")
        print("cancelled; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        kb.close()
    elapsed = time.monotonic() - started
    chunks = last.chunks if last else 0
    summary = {
        "event": "done", "kb": args.kb, **counts, "chunks": chunks,
        "seconds": round(elapsed, 3), "chunks_per_s": round(chunks / elapsed, 2) if elapsed else 0.0,
        "health_ok": health_ok,
    }
    if args.json:
        print_json(summary, lines=True)
    else:
        bar.close("done")
        print(f"indexed {counts['indexed']} files ({chunks} chunks), {counts['unchanged']} unchanged, "
              f"{counts['skipped']} skipped, {counts['removed']} removed in {elapsed:.1f} s")
    return 0 if health_ok else 1
