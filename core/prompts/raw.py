"""Plain completion (the ``raw`` format), for base models that were never taught a chat format.

No tags and no template: a single user message is sent exactly as written, after the model's
BOS when its tokenizer adds one, and tokenized as the tokenizer does on its own (special-token
parsing off). A longer conversation is joined as plain text: every non-empty message's text
as written, in order (a system message first, then the turns), with one blank line
(``"\\n\\n"``) between two messages; roles are not written. The model's EOS is the only stop.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.errors import PromptFormatError
from core.prompts.base import Message, RenderedPrompt, Segment, TagPolicy, guard_tags

#: what goes between two messages of a conversation
JOIN = "\n\n"
#: Ollama's raw mode parses special-token texts in the prompt: these common ones are refused
#: (or defused) there; llama.cpp gets the text with special-token parsing off instead.
OLLAMA_TAGS = ("<s>", "</s>", "<bos>", "<eos>", "<|endoftext|>", "<|begin_of_text|>",
               "<|end_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>",
               "<start_of_turn>", "<end_of_turn>")


def render_raw(
    messages: Sequence[Message],
    *,
    bos: str | None = None,
    tags: TagPolicy = "refuse",
    for_ollama: bool = False,
) -> RenderedPrompt:
    """The conversation as plain text; ``bos`` is the model's BOS text when its tokenizer
    adds one (None: no BOS, or unknown, as for Ollama, whose runner adds it)."""
    if not messages:
        raise PromptFormatError("the conversation is empty: there is no message to answer")
    for msg in messages:
        if msg.role not in ("system", "user", "assistant"):
            raise PromptFormatError(f"unknown role {msg.role!r}: use system, user or assistant")
    notes: tuple[str, ...] = ()
    if for_ollama:
        messages, notes = guard_tags(messages, OLLAMA_TAGS, tags, "raw (Ollama raw mode)")
    text = JOIN.join(m.content for m in messages if m.content)
    if not text:
        raise PromptFormatError("the conversation is empty: there is no text to continue")
    segments: list[Segment] = []
    if bos and not for_ollama:
        segments.append(Segment("special", bos, bos))
    segments.append(Segment("text", text, text, dummy_prefix=None))
    display = "".join(s.display for s in segments)
    return RenderedPrompt("raw", display, tuple(segments), raw=text if for_ollama else None,
                          notes=notes)
