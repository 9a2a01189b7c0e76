"""Code Llama 70B Instruct prompts, as Meta's reference ``dialog_prompt_tokens`` builds them
(FORMATS.md 2.2-2.3): ``Source: role`` turns ended by ``<step>``, with the implicit empty
system turn when the conversation has no system message."""

from __future__ import annotations

from collections.abc import Sequence

from core.prompts.base import Message, RenderedPrompt, Segment, TagPolicy, guard_tags, split_system

BOS, EOS, STEP = "<s>", "</s>", "<step>"
#: Code Llama's SPECIAL_TAGS (Meta's reference list).
SPECIAL_TAGS = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", STEP)
RAW_TAGS = (*SPECIAL_TAGS, BOS, EOS)
ASSISTANT_HEADER = "Source: assistant\nDestination: user"
STOP = (STEP, "Source:", "Destination:")


def render_codellama70b(
    messages: Sequence[Message], *, tags: TagPolicy = "refuse", for_ollama: bool = False
) -> RenderedPrompt:
    checked, notes = guard_tags(
        messages, RAW_TAGS if for_ollama else SPECIAL_TAGS, tags, "codellama70b"
    )
    system, turns = split_system(checked)
    dialog = [Message("system", system or ""), *turns]
    # The display string is written as the HF card writes it ("... <step> Source: ..."); the
    # segments carry what the reference encodes (" Source: ...", "\n\n " + content, <step>).
    segments: list[Segment] = [Segment("special", BOS, BOS)]
    for msg in dialog:
        header = f"Source: {msg.role.strip()}"
        segments.append(Segment("text", " " + header, header, dummy_prefix=False))
        if msg.content:
            body = "\n\n " + msg.content.strip()
            segments.append(Segment("text", body, body, dummy_prefix=False))
        segments.append(Segment("special", STEP, f" {STEP} "))
    segments.append(Segment("text", " " + ASSISTANT_HEADER, ASSISTANT_HEADER, dummy_prefix=False))
    segments.append(Segment("text", "\n\n ", "\n\n ", dummy_prefix=False))
    text = "".join(s.display for s in segments)
    raw = text[len(BOS) :] if for_ollama else None
    return RenderedPrompt("codellama70b", text, tuple(segments), raw=raw, stop=STOP, notes=notes)
