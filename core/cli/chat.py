"""`corral chat`: talk to a model from the terminal; the answer streams to standard output and
the conversation is stored in the history (unless --no-save).

With the safety guard on, the answer is printed as it streams or, when the settings hold
answers, once the guard has checked it. A guard that cannot run blocks the message (or warns,
as the settings say); --without-guard sends one message without it, and the history and the
audit log record that choice."""

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
    parser.add_argument("--without-guard", action="store_true",
                        help="send this message without the safety guard (recorded in the "
                             "history and the audit log)")
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
        from core.safety.verdict import holds_answers

        options["guard"] = guard
        options["check_documents"] = bool(settings.safety.check_documents)
        options["hold"] = holds_answers(settings.safety)
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
    """The guard from the settings (None when off); one that cannot be built stands in as an
    UnavailableGuard, so the turn blocks or warns instead of running unguarded."""
    from core.safety.guard import guard_from_settings

    return guard_from_settings(settings)


def _unguarded_reason(session: Any) -> str:
    problem = getattr(session.guard, "problem", None)
    why = f" (the guard was unavailable: {problem.sentence()})" if problem is not None else ""
    return "the user chose --without-guard" + why


def _say_verdict(ev: Any, args: argparse.Namespace) -> None:
    """A verdict that blocks or warns, said on standard error (nothing for a safe one)."""
    from core.safety.verdict import GuardVerdict

    verdict = ev.verdict or {}
    if args.json or verdict.get("action") not in ("block", "warn"):
        return
    sentence = GuardVerdict.from_dict(verdict).explanation()
    if verdict.get("action") == "warn":
        print(f"warning: {sentence}", file=sys.stderr)
    elif ev.direction == "output":
        print(f"answer withheld: {sentence}", file=sys.stderr)


def _turn(session: Any, text: str, args: argparse.Namespace) -> int:
    from core.chat.export import stats_line

    final: Any = None
    verdicts: list[dict[str, Any]] = []
    blocked = False
    unguarded = _unguarded_reason(session) if args.without_guard else ""
    events = session.send(text, drop_oldest=args.drop_oldest, unguarded=unguarded)
    stopping = False
    while True:
        try:
            ev = next(events, None)
        except KeyboardInterrupt:
            if stopping:  # a second Ctrl-C: leave now (the answer so far stays unchecked)
                events.close()
                raise
            stopping = True  # the first stops the answer; the guard still checks what came
            session.cancel()
            continue
        if ev is None:
            break
        if ev.kind == "delta" and not args.json:
            sys.stdout.write(ev.text)
            sys.stdout.flush()
        elif ev.kind == "verdict":
            verdicts.append({"direction": ev.direction, **(ev.verdict or {})})
            _say_verdict(ev, args)
        elif ev.kind == "blocked":
            blocked = True
            _say_blocked(ev.verdict or {}, args)
        elif ev.kind == "finished":
            final = ev.message
    if stopping and not args.json:
        print(file=sys.stderr)
    withheld = final is not None and (final.verdict or {}).get("action") == "block"
    if args.json:
        out: dict[str, Any] = {
            "conversation_id": session.conversation.id if session.conversation else None,
            "text": final.content if final and not withheld else "", "blocked": blocked,
            "withheld": withheld, "unguarded": unguarded, "verdicts": verdicts,
        }
        if final is not None:
            out.update({k: getattr(final, k) for k in (
                "model", "format", "prompt_tokens", "completion_tokens", "tokens_per_s",
                "first_token_s", "total_s", "finish_reason", "citations", "warning")})
        print_json(out)
    elif final is not None:
        if session.hold and session.guard is not None and not unguarded and not withheld:
            sys.stdout.write(final.content)  # held until the guard had checked it
        sys.stdout.write("\n")
        _print_references(final.citations, session.kb)
        sys.stdout.flush()
        line = stats_line(final)
        if line:
            print(line, file=sys.stderr)
        if final.warning:
            print(f"warning: {final.warning}", file=sys.stderr)
    return 3 if blocked or withheld else 0


def _say_blocked(verdict: dict[str, Any], args: argparse.Namespace) -> None:
    from core.safety.verdict import GuardVerdict

    if args.json:
        return
    print(f"not sent: {GuardVerdict.from_dict(verdict).explanation()}", file=sys.stderr)
    if verdict.get("verdict") in ("unknown", "unavailable"):
        print("To send this one message without the guard, run the command again with "
              "--without-guard.", file=sys.stderr)


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
