"""`corral chat`: talk to a model from the terminal; the answer streams to standard output and
the conversation is stored in the history (unless --no-save)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.cli._common import add_json_flag, load_settings, print_json, read_input

HELP = "chat with a model from the terminal"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="REF",
                        help="ollama:NAME[:TAG], store:NAME, a .gguf path, or an imported name")
    parser.add_argument("prompt", nargs="?", metavar="PROMPT|-",
                        help="the message ('-': standard input; omitted: an interactive chat)")
    parser.add_argument("--system", "-s", metavar="S", help="system prompt")
    parser.add_argument("--format", "-f", metavar="F", default=None,
                        help="llama2, codellama, codellama70b, model, raw (plain completion for a base "
                             "model) (default: picked from the model)")
    parser.add_argument("--max-tokens", "-n", type=int, metavar="N")
    parser.add_argument("--temperature", "-t", type=float, metavar="T")
    parser.add_argument("--top-p", type=float, metavar="P")
    parser.add_argument("--top-k", type=int, metavar="K")
    parser.add_argument("--repeat-penalty", type=float, metavar="R")
    parser.add_argument("--ctx", type=int, metavar="N", help="context length")
    parser.add_argument("--seed", type=int, metavar="N")
    parser.add_argument("--stop", action="append", default=[], metavar="S",
                        help="stop string (repeatable)")
    parser.add_argument("--no-save", action="store_true", help="do not store the conversation")
    parser.add_argument("--kb", metavar="NAME",
                        help="ground the answer in a knowledge base; its references follow it")
    parser.add_argument("--hits", type=int, metavar="N",
                        help="passages retrieved per turn with --kb (default: settings, 4)")
    parser.add_argument("--threshold", type=float, metavar="T",
                        help="least cosine similarity of a passage (default: settings, 0.1)")
    parser.add_argument("--conversation", type=int, metavar="ID",
                        help="continue a stored conversation")
    parser.add_argument("--drop-oldest", action="store_true",
                        help="drop the oldest turns if the conversation overflows the context")
    add_json_flag(parser)


def _params(args: argparse.Namespace, settings: Any) -> Any:
    from core.chat.params import GenerationParams

    params = GenerationParams.from_settings(settings.chat)
    for name in ("max_tokens", "temperature", "top_p", "top_k", "repeat_penalty", "seed"):
        value = getattr(args, name)
        if value is not None:
            setattr(params, name, value)
    if args.ctx:
        params.context_length = args.ctx
    params.stop = list(args.stop)
    return params.validate()


def run(args: argparse.Namespace) -> int:
    from core.chat.open import open_backend
    from core.chat.session import ChatSession, open_session
    from core.chat.store import HistoryStore

    settings = load_settings()
    params = _params(args, settings)
    backend = open_backend(args.model, settings, n_ctx=args.ctx or 0)
    store = HistoryStore(":memory:" if args.no_save else None)
    options: dict[str, Any] = {"params": params, "model_ref": args.model,
                               "tags": settings.chat.special_tags}
    if args.format:
        options["fmt"] = args.format
    if args.system is not None:
        options["system"] = args.system
    kb = args.kb
    if not kb and args.conversation:  # a grounded conversation stays grounded
        kb = store.conversation(args.conversation).kb
    if kb:
        from core.chat.retrieval import open_retrieval

        options["retrieval"] = open_retrieval(kb, settings, k=args.hits,
                                              threshold=args.threshold)
        options["kb"] = kb
    guard = _guard(settings)
    if guard is not None:
        options["guard"] = guard
        options["check_documents"] = bool(settings.safety.check_documents)
    if args.conversation:
        session = open_session(backend, store, args.conversation, **options)
    else:
        options.setdefault("fmt", settings.chat.prompt_format or "auto")
        options.setdefault("system", settings.chat.system_prompt)
        session = ChatSession(backend, store=store, **options)
    if args.prompt is not None:
        text = read_input("-") if args.prompt == "-" else args.prompt
        return _turn(session, text, args)
    if not sys.stdin.isatty():
        return _turn(session, sys.stdin.read(), args)
    while True:  # interactive
        try:
            text = input(">>> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if text.strip() in ("/bye", "/exit", "/quit"):
            return 0
        if text.strip():
            _turn(session, text, args)


def _guard(settings: Any) -> Any:
    if not settings.safety.enabled or not settings.safety.guard_model:
        return None
    from core.safety.guard import GuardService

    return GuardService.from_settings(settings)


def _turn(session: Any, text: str, args: argparse.Namespace) -> int:
    from core.chat.export import stats_line

    final: Any = None
    verdicts: list[dict[str, Any]] = []
    blocked = False
    events = session.send(text, drop_oldest=args.drop_oldest)
    try:
        for ev in events:
            if ev.kind == "delta" and not args.json:
                sys.stdout.write(ev.text)
                sys.stdout.flush()
            elif ev.kind == "verdict":
                verdicts.append({"direction": ev.direction, **(ev.verdict or {})})
            elif ev.kind == "blocked":
                blocked = True
                if not args.json:
                    cats = ", ".join(str(c) for c in (ev.verdict or {}).get("categories") or [])
                    print(f"blocked by the safety guard{': ' + cats if cats else ''}",
                          file=sys.stderr)
            elif ev.kind == "finished":
                final = ev.message
    except KeyboardInterrupt:
        session.cancel()
        events.close()
        if not args.json:
            print(file=sys.stderr)
        raise
    if args.json:
        out: dict[str, Any] = {
            "conversation_id": session.conversation.id if session.conversation else None,
            "text": final.content if final else "", "blocked": blocked, "verdicts": verdicts,
        }
        if final is not None:
            out.update({k: getattr(final, k) for k in (
                "model", "format", "prompt_tokens", "completion_tokens", "tokens_per_s",
                "first_token_s", "total_s", "finish_reason", "citations", "warning")})
        print_json(out)
    elif final is not None:
        sys.stdout.write("\n")
        _print_references(final.citations, session.kb)
        sys.stdout.flush()
        line = stats_line(final)
        if line:
            print(line, file=sys.stderr)
        if final.warning:
            print(f"warning: {final.warning}", file=sys.stderr)
    return 3 if blocked else 0


def _print_references(citations: list[dict[str, Any]] | None, kb: str) -> None:
    """The numbered references of a grounded answer, then the passages the guard left out."""
    from core.chat.hooks import citation_label, left_out_note, split_citations

    used, left = split_citations(citations)
    if kb and not citations:
        print(f"No passage of knowledge base '{kb}' was close enough to the question; "
              "the answer is not grounded.", file=sys.stderr)
    if used:
        print("\nReferences:")
        for cite in used:
            print(f"  {citation_label(cite)}")
    for cite in left:
        print(left_out_note(cite))
