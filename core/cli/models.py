"""`corral models`: list, inspect, pull, remove and import models.

``rm`` asks for confirmation on a terminal; without a terminal it needs ``--yes`` (a script
must say it means it). Removing an imported GGUF only forgets it: the file stays where it is.
Corral never deletes files or writes into Ollama's store on disk.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.cli._common import ProgressBar, add_json_flag, load_settings, print_json
from core.errors import CorralError
from core.units import human_size

HELP = "list, inspect, pull, remove and import models"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("list", help="every model: Ollama server, Ollama store, GGUF files")
    add_json_flag(p)
    p = sub.add_parser("inspect", help="metadata, chat template and Modelfile parts of a model")
    p.add_argument("ref", help="ollama:NAME, store:NAME, a .gguf path, or an imported name")
    p.add_argument("--sha256", action="store_true", help="also compute the file's SHA-256")
    add_json_flag(p)
    p = sub.add_parser("pull", help="download an Ollama model through the Ollama server")
    p.add_argument("name", help="e.g. llama2:7b (an ollama: prefix is accepted)")
    add_json_flag(p)
    p = sub.add_parser("rm", help="delete an Ollama model, or forget an imported GGUF")
    p.add_argument("ref")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    add_json_flag(p)
    p = sub.add_parser("import", help="register GGUF files or folders in place (not copied)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--name", help="the name for a single imported file")
    add_json_flag(p)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    action = {"list": _list, "inspect": _inspect, "pull": _pull, "rm": _rm,
              "import": _import}[args.action]
    return action(args, settings)


# --- helpers ---------------------------------------------------------------------------


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _client(settings: Any) -> Any:
    from core.models.ollama_client import OllamaClient

    return OllamaClient.from_settings(settings)


# --- actions ---------------------------------------------------------------------------


def _list(args: argparse.Namespace, settings: Any) -> int:
    from core.models.catalog import collect

    result = collect(settings)
    if args.json:
        print_json(result.to_dict())
        return 0
    rows = [[m.ref, m.source_label, m.family or "-", m.parameter_size or "-",
             m.quantization or "-", human_size(m.file_size),
             str(m.context_length) if m.context_length else "-", "yes" if m.loaded else "",
             f"PROBLEM: {m.problem}" if m.problem else ""] for m in result.models]
    if rows:
        print(_table(rows, ["REF", "SOURCE", "FAMILY", "PARAMS", "QUANT", "SIZE", "CONTEXT",
                            "LOADED", ""]))
    else:
        print("No models yet. Pull one (corral models pull NAME) or import a GGUF file "
              "(corral models import PATH).")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _inspect(args: argparse.Namespace, settings: Any) -> int:
    from core.errors import UnsafeTemplate
    from core.models.catalog import inspect_model

    info = inspect_model(args.ref, settings, compute_sha256=args.sha256)
    if args.json:
        print_json(info)
    else:
        _print_inspect(info)
    if info.get("template_problem"):
        raise UnsafeTemplate(f"the chat template of {info['ref']} is unsafe: "
                             f"{info['template_problem']}",
                             hint="Do not chat with this model through its own template.")
    return 0


def _print_inspect(info: dict[str, Any]) -> None:
    s = info.get("summary") or {}
    print(f"{info['ref']}  ({info['source']})")
    if info.get("path"):
        print(f"  file:              {info['path']}")
    if info.get("sha256"):
        print(f"  sha256:            {info['sha256']}")
    labels = [("architecture", "architecture"), ("name", "name"),
              ("parameter_size", "parameters"), ("quantization", "quantization"),
              ("context_length", "context length"), ("embedding_length", "embedding length"),
              ("block_count", "layers"), ("head_count", "heads"), ("head_count_kv", "KV heads"),
              ("tokenizer_model", "tokenizer"), ("vocab_size", "vocabulary"),
              ("file_size", "file size"), ("tensor_count", "tensors")]
    for key, label in labels:
        value = s.get(key)
        if value not in (None, ""):
            shown = human_size(value) if key == "file_size" else value
            print(f"  {label + ':':<19}{shown}")
    for problem in info.get("problems") or []:
        print(f"  problem:           {problem}")
    if s.get("chat_template"):
        print("  chat template:")
        for line in str(s["chat_template"]).splitlines() or [""]:
            print(f"    {line}")
    ollama = info.get("ollama") or {}
    for part in ("template", "system", "parameters", "license"):
        text = ollama.get(part)
        if text:
            print(f"  Modelfile {part}:")
            for line in str(text).splitlines()[:40]:
                print(f"    {line}")
    meta = info.get("metadata") or {}
    if meta:
        print("  metadata:")
        lengths = info.get("array_lengths") or {}
        for key in sorted(meta):
            if key == "tokenizer.chat_template":
                continue
            value = meta[key]
            if key in lengths:
                value = f"[{lengths[key]} items] {value!r}"[:100]
            print(f"    {key} = {str(value)[:100]}")


def _pull(args: argparse.Namespace, settings: Any) -> int:
    name = args.name.removeprefix("ollama:")
    client = _client(settings)
    bar = ProgressBar(f"pulling {name}")
    stream = client.pull(name)
    try:
        for p in stream:
            if args.json:
                print_json({"status": p.status, "digest": p.digest, "total": p.total,
                            "completed": p.completed, "fraction": p.fraction}, lines=True)
            else:
                bar.update(p.fraction, p.status, force=p.done)
    except KeyboardInterrupt:
        stream.close()
        bar.close("cancelled")
        raise
    bar.close("done")
    if not args.json:
        print(f"pulled {name}; use it as ollama:{name}")
    return 0


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CorralError("not removing anything without confirmation",
                          hint="Add --yes to confirm.")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CorralError("nothing removed")


def _rm(args: argparse.Namespace, settings: Any) -> int:
    from core.models import library
    from core.models.refs import parse_ref

    r = parse_ref(args.ref)
    if r.kind == "ollama":
        client = _client(settings)
        _confirm(f"Delete Ollama model {r.name} from the server at {client.host}?", args.yes)
        client.delete(r.name)
        result = {"removed": f"ollama:{r.name}", "file_deleted": True}
    elif r.kind == "store":
        raise CorralError("Corral never writes into Ollama's store on disk",
                          hint=f"With Ollama running, remove it as ollama:{r.name}.")
    elif r.path is not None:
        raise CorralError(f"{r.path} is a file, not a registered model; Corral does not "
                          "delete files", hint="Delete it with your file manager.")
    else:
        entry = library.get(r.name)
        if entry is None:
            from core.errors import ModelNotFound

            raise ModelNotFound(f"no imported model is called '{r.name}'",
                                hint=f"For an Ollama model write ollama:{r.name}.")
        _confirm(f"Forget imported model {entry.name}? (the file {entry.path} stays)", args.yes)
        library.forget(entry.name)
        result = {"removed": entry.name, "file_deleted": False, "path": entry.path}
    if args.json:
        print_json(result)
    else:
        extra = "" if result["file_deleted"] else " (the file was left in place)"
        print(f"removed {result['removed']}{extra}")
    return 0


def _import(args: argparse.Namespace, settings: Any) -> int:
    from core.models import library

    bar = ProgressBar("importing")
    imported, failures = library.import_paths(args.paths, args.name,
                                              lambda f, t: bar.update(f, t))
    bar.close()
    if args.json:
        print_json({"imported": [m.to_dict() for m in imported],
                    "failed": [{"path": f.path, "reason": f.reason} for f in failures]})
    else:
        for m in imported:
            print(f"imported {m.name}  ({m.path}, sha256 {m.sha256[:12]}…)")
        for f in failures:
            print(f"not imported: {f.path}: {f.reason}", file=sys.stderr)
    if failures and not imported:
        return 1
    return 0
