"""What the chat turn runner expects from the safety guard and from document retrieval.

Both are optional. The guard (core.safety.guard) checks the user's message before anything
else happens (retrieval included), the retrieved passages before they enter the prompt, and
the answer - whole or partial - once it has stopped; retrieval (core.rag) returns hits that go
into the prompt inside clear delimiters and are stored as citations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import Any, Protocol

from core.prompts.base import defuse


class Verdict(Protocol):
    verdict: str  #: 'safe' | 'unsafe' | 'unknown' (not understood) | 'unavailable' | 'skipped'
    categories: Sequence[Any]
    action: str  #: 'allow' | 'warn' | 'block' | 'log'

    def to_dict(self) -> dict[str, Any]: ...


class Guard(Protocol):
    """``conversation_id`` is the history's id of the conversation (the audit log keeps it).
    A guard that cannot answer returns a verdict saying so, never raises and never 'safe'."""

    def check_input(self, messages: list[dict[str, str]], *,
                    conversation_id: str = "") -> Verdict | None: ...
    def check_output(self, messages: list[dict[str, str]], *,
                     conversation_id: str = "") -> Verdict | None: ...


class DocumentGuard(Protocol):
    """A guard that can judge retrieved passages before they enter a prompt."""

    def check_documents(self, chunks: Sequence[str], *,
                        conversation_id: str = "") -> Sequence[Verdict]: ...


Retrieval = Callable[[str], Sequence[Any]]

#: Control tags of every format Corral writes; retrieved text never carries them into a prompt.
ALL_TAGS = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<step>", "<s>", "</s>",
            "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def _field(hit: Any, name: str, default: Any = None) -> Any:
    if isinstance(hit, dict):
        return hit.get(name, default)
    return getattr(hit, name, default)


def citation(hit: Any, number: int | None) -> dict[str, Any]:
    """The JSON-able record of one retrieved chunk, as stored on the answer."""
    source = str(_field(hit, "source", "") or "")
    return {
        "n": number,
        "source": source,
        "file_name": str(_field(hit, "file_name", "") or "") or PurePath(source).name,
        "page": _field(hit, "page"),
        "chunk_index": _field(hit, "chunk_index"),
        "score": _field(hit, "score"),
        "text": str(_field(hit, "text", "") or ""),
    }


def left_out(hit: Any, verdict: Verdict) -> dict[str, Any]:
    """The record of a retrieved chunk the guard kept out of the prompt (its text is not kept)."""
    return {**citation(hit, None), "text": "", "left_out": True, "verdict": verdict.to_dict()}


def cited_where(cite: dict[str, Any]) -> str:
    """'guide.pdf, page 2' (the file's name; the page only when the source has pages)."""
    name = str(cite.get("file_name") or "") or PurePath(str(cite.get("source") or "")).name
    page = cite.get("page")
    return (name or "?") + (f", page {page}" if page not in (None, "") else "")


def citation_label(cite: dict[str, Any]) -> str:
    """'[1] guide.pdf, page 2 (score 0.53)': one reference under an answer."""
    score = cite.get("score")
    tail = f" (score {float(score):.2f})" if isinstance(score, (int, float)) else ""
    return f"[{cite.get('n')}] {cited_where(cite)}{tail}"


def left_out_note(cite: dict[str, Any]) -> str:
    """Why a retrieved passage is missing from the prompt, as a sentence."""
    verdict = cite.get("verdict") or {}
    codes = [str(c) for c in verdict.get("categories") or []]
    names = [str(n) for n in verdict.get("category_names") or []]
    cats = ", ".join(f"{c} {names[i]}" if i < len(names) else c for i, c in enumerate(codes))
    why = {"unsafe": "judged unsafe by the safety guard" + (f" ({cats})" if cats else ""),
           "unknown": "which the safety guard could not judge",
           "unavailable": "which the safety guard could not check"}.get(
        str(verdict.get("verdict")), "flagged by the safety guard")
    return f"Left out of the prompt: a passage from {cited_where(cite)}, {why}."


def split_citations(cites: Sequence[dict[str, Any]] | None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(references that entered the prompt, passages the guard left out)."""
    cites = list(cites or [])
    return ([c for c in cites if not c.get("left_out")], [c for c in cites if c.get("left_out")])


def warned_note(cite: dict[str, Any]) -> str:
    """Why a passage that entered the prompt carries a warning ("" when it does not)."""
    verdict = cite.get("verdict") or {}
    if cite.get("left_out") or verdict.get("action") != "warn":
        return ""
    if verdict.get("verdict") in ("unknown", "unavailable"):
        return (f"Warning: the passage from {cited_where(cite)} entered the prompt unchecked "
                f"({verdict.get('reason') or 'the guard could not judge it'}).")
    codes = ", ".join(str(c) for c in verdict.get("categories") or [])
    return (f"Warning: the passage from {cited_where(cite)} was judged unsafe by the safety "
            f"guard{f' ({codes})' if codes else ''}; your policy lets it in with a warning.")


def cite_retrieved(hits: Sequence[Any], guard: Any = None, *, check_documents: bool = False,
                   conversation_id: str = "") -> tuple[list[Any], list[dict[str, Any]]]:
    """The hits that may enter a prompt (screened by the guard when ``check_documents``), and
    the citations to store: those hits numbered [1], [2] ... (a warned one keeps its verdict),
    then the passages left out."""
    hits = list(hits)
    if not (check_documents and guard is not None and hits):
        return hits, [citation(h, i) for i, h in enumerate(hits, 1)]
    kept, left = screen(hits, guard, conversation_id=conversation_id)
    cites = []
    for i, (hit, verdict) in enumerate(kept, 1):
        cite = citation(hit, i)
        if verdict is not None and verdict.action == "warn":
            cite["verdict"] = verdict.to_dict()
        cites.append(cite)
    return [hit for hit, _ in kept], cites + left


def screen(hits: Sequence[Any], guard: Any, *, conversation_id: str = ""
           ) -> tuple[list[tuple[Any, Verdict | None]], list[dict[str, Any]]]:
    """Retrieved hits a DocumentGuard lets into a prompt, each with its verdict, and records
    of those it left out (their verdict blocks: judged unsafe, or not judged while unavailable
    guards block). A guard without ``check_documents`` leaves every passage out."""
    check = getattr(guard, "check_documents", None)
    if not hits:
        return [], []
    if check is None:
        missing = {"verdict": "unavailable", "action": "block", "direction": "document",
                   "reason": "the guard could not run: it cannot check passages"}
        return [], [{**citation(h, None), "text": "", "left_out": True, "verdict": missing}
                    for h in hits]
    verdicts = list(check([str(_field(h, "text", "") or "") for h in hits],
                          conversation_id=conversation_id))
    kept: list[tuple[Any, Verdict | None]] = []
    out: list[dict[str, Any]] = []
    for hit, verdict in zip(hits, verdicts, strict=True):
        if verdict is not None and verdict.action == "block":
            out.append(left_out(hit, verdict))
        else:
            kept.append((hit, verdict))
    return kept, out


def _as_hit(hit_type: Any, hit: Any) -> Any:
    c = citation(hit, None)
    page = c["page"]
    return hit_type(text=c["text"], source=c["source"],
                    page=int(page) if isinstance(page, (int, float)) else None,
                    chunk_index=int(c["chunk_index"] or 0), score=float(c["score"] or 0.0),
                    id=str(_field(hit, "id", "") or ""),
                    file_name=str(_field(hit, "file_name", "") or ""))


def grounded_question(question: str, hits: Sequence[Any]) -> str:
    """The user's question with the retrieved chunks before it, clearly marked as data (the
    documents area owns the wording and the delimiters)."""
    from core.rag.retriever import Hit, format_context

    as_hits = [h if isinstance(h, Hit) else _as_hit(Hit, h) for h in hits]
    return f"{defuse(format_context(as_hits), ALL_TAGS)}\n\nQuestion: {question}"
