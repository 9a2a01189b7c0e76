"""The prompt-format registry: render a conversation for a format, pick a format for a model,
and turn a rendered prompt into llama.cpp token ids segment by segment (never a double BOS)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import PromptFormatError
from core.prompts.base import (
    Message,
    RenderedPrompt,
    Segment,
    TagPolicy,
    as_messages,
    guard_tags,
)
from core.prompts.codellama70b import render_codellama70b
from core.prompts.llama2 import render_llama2
from core.prompts.raw import render_raw

#: name -> one line for people (the CLI and the format picker show these)
FORMATS: dict[str, str] = {
    "llama2": "Llama 2 chat, Meta's reference format (also Code Llama 7B/13B/34B Instruct)",
    "codellama": "Code Llama 7B/13B/34B Instruct (the same format as llama2)",
    "codellama70b": "Code Llama 70B Instruct, Meta's reference turn format",
    "model": "the model's own chat template (GGUF metadata, or Ollama's template)",
    "raw": "plain completion for base models: the text as written, no tags; a conversation's "
           "messages joined with a blank line between them",
}


@dataclass(frozen=True)
class ModelTemplate:
    """What the ``model`` format needs from a GGUF: its template and special-token texts."""

    source: str
    bos_token: str = "<s>"
    eos_token: str = "</s>"
    add_bos: bool = True
    special_texts: tuple[str, ...] = field(default=())


def normalise_format(name: str) -> str:
    key = (name or "").strip().lower().replace("-", "").replace("_", "")
    aliases = {"llama2": "llama2", "llama2chat": "llama2", "codellama": "llama2",
               "codellama70b": "codellama70b", "model": "model", "template": "model",
               "raw": "raw", "plain": "raw"}
    if key not in aliases:
        raise PromptFormatError(
            f"unknown prompt format {name!r}; choose one of: " + ", ".join(FORMATS)
        )
    return aliases[key]


def render(
    messages: Iterable[Any],
    format_name: str,
    *,
    tags: TagPolicy = "refuse",
    for_ollama: bool = False,
    template: ModelTemplate | None = None,
    bos: str | None = None,
) -> RenderedPrompt:
    """Render ``messages`` in a format. ``for_ollama`` also builds the raw-mode string and
    checks the tags Ollama would parse as special tokens. ``template``: the model's own
    (the ``model`` format); ``bos``: the model's BOS text when its tokenizer adds one (the
    ``raw`` format starts with it)."""
    msgs = as_messages(messages)
    fmt = normalise_format(format_name)
    if fmt == "raw":
        return render_raw(msgs, bos=bos, tags=tags, for_ollama=for_ollama)
    if fmt == "llama2":
        return render_llama2(msgs, tags=tags, for_ollama=for_ollama)
    if fmt == "codellama70b":
        return render_codellama70b(msgs, tags=tags, for_ollama=for_ollama)
    if template is None:
        raise PromptFormatError(
            "the 'model' format needs the model's own chat template, and this model has none",
            hint="Choose the raw format for a base model, or llama2 or codellama70b.",
        )
    return render_model_template(msgs, template, tags=tags)


def render_model_template(
    messages: Sequence[Message], template: ModelTemplate, *, tags: TagPolicy = "refuse"
) -> RenderedPrompt:
    from core.prompts.template import render_chat_template

    specials = [t for t in template.special_texts if len(t) > 1]
    specials += [t for t in (template.bos_token, template.eos_token) if t and t not in specials]
    checked, notes = guard_tags(messages, specials, tags, "model's own")
    if not checked:
        raise PromptFormatError("the conversation is empty: there is no message to answer")
    text = render_chat_template(
        template.source,
        [m.to_dict() for m in checked],
        bos_token=template.bos_token,
        eos_token=template.eos_token,
    )
    segments: list[Segment] = []
    bos = template.bos_token
    if template.add_bos and bos:  # the runtime wants BOS: show it, send it exactly once
        if text.startswith(bos):
            text = text[len(bos) :]
        segments.append(Segment("special", bos, bos))
    # No message can hold a special-token text any more, so the rendered string can be
    # tokenized with special parsing on as one piece, like llama.cpp --jinja does.
    segments.append(Segment("markup", text, text))
    display = "".join(s.display for s in segments)
    return RenderedPrompt("model", display, tuple(segments), notes=notes)


# --- token ids ---------------------------------------------------------------------------


class Tokenizer(Protocol):
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]: ...
    def token_pieces(self, ids: Sequence[int]) -> list[bytes]: ...


class PromptTokenizer:
    """Builds token ids for rendered prompts with one model's tokenizer (the engine child)."""

    def __init__(self, tokenizer: Tokenizer, info: Mapping[str, Any]) -> None:
        self.tok = tokenizer
        self.bos = int(info["bos"])
        self.eos = int(info["eos"])
        meta = info.get("metadata") or {}
        flag = str(meta.get("tokenizer.ggml.add_space_prefix", "")).lower()
        self._space_prefix: bool | None = {"true": True, "false": False}.get(flag)
        self._special_ids: dict[str, int] = {}
        self._bos_text: str | None = None

    @property
    def adds_space_prefix(self) -> bool:
        if self._space_prefix is None:
            ids = self.tok.tokenize("a", add_bos=False, special=False)
            pieces = self.tok.token_pieces(ids[:1]) if ids else [b""]
            self._space_prefix = pieces[0].startswith(b" ")
        return self._space_prefix

    def special_id(self, text: str) -> int:
        if text == "<s>":
            return self.bos
        if text == "</s>":
            return self.eos
        if self._bos_text is None:  # the model's own BOS text (the raw format writes it)
            self._bos_text = self.tok.token_pieces([self.bos])[0].decode("utf-8", "replace")
        if text == self._bos_text:
            return self.bos
        if text not in self._special_ids:
            ids = self.tok.tokenize(text, add_bos=False, special=True)
            if len(ids) != 1:
                raise PromptFormatError(
                    f"this model's vocabulary has no {text} token, which the prompt format needs",
                    hint="Pick the prompt format that matches the model.",
                )
            self._special_ids[text] = ids[0]
        return self._special_ids[text]

    def segment_ids(self, seg: Segment) -> list[int]:
        if seg.kind == "special":
            return [self.special_id(seg.text)]
        if seg.kind == "markup":
            return self.tok.tokenize(seg.text, add_bos=False, special=True)
        text = seg.text
        if seg.dummy_prefix is None:  # as the tokenizer does on its own (the raw format)
            return self.tok.tokenize(text, add_bos=False, special=False)
        if seg.dummy_prefix and not self.adds_space_prefix:
            text = " " + text
        if seg.dummy_prefix or not self.adds_space_prefix:
            return self.tok.tokenize(text, add_bos=False, special=False)
        # Encode without the tokenizer's leading space: let it stand in for ours, or drop it.
        if text.startswith(" "):
            return self.tok.tokenize(text[1:], add_bos=False, special=False)
        ids = self.tok.tokenize(text, add_bos=False, special=False)
        if ids and self.tok.token_pieces(ids[:1])[0] == b" ":
            ids = ids[1:]
        return ids

    def ids(self, prompt: RenderedPrompt) -> list[int]:
        out: list[int] = []
        for seg in prompt.segments:
            out += self.segment_ids(seg)
        if out[:2] == [self.bos, self.bos]:  # a template that writes BOS twice
            out = out[1:]
        return out


# --- picking a format for a model ---------------------------------------------------------


#: words in a model's name or metadata that say it was tuned to chat or follow instructions
_CHAT_WORDS = ("chat", "instruct")


def _says_llama2_chat(compact: str) -> bool:
    """Llama 2 Chat or Code Llama Instruct (7B/13B/34B), by name: both use the llama2 format."""
    llama2 = any(k in compact for k in ("llama2", "llamav2", "codellama"))
    return llama2 and any(w in compact for w in _CHAT_WORDS)


def pick_format(
    *,
    name: str = "",
    family: str = "",
    template: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """(format, reason) for a model, from its name, chat template (Jinja or Go) and GGUF
    metadata (general.name, basename, finetune). ``family`` (llama ...) is accepted but says
    nothing about chat tuning: base and chat models share it.

    A model without a chat template whose name and metadata do not say Llama 2 Chat or Code
    Llama Instruct is a base model: it gets plain completion (``raw``), never [INST] tags it
    was not trained on."""
    meta = metadata or {}
    words = [name, *(str(meta.get(f"general.{k}") or "") for k in ("name", "basename", "finetune"))]
    compact = " ".join(words).lower().replace("_", "").replace("-", "").replace(" ", "")
    compact = compact.replace(".", "")
    tpl = template or ""
    if "Source: assistant" in tpl and "<step>" in tpl:
        return "codellama70b", "its chat template is Code Llama 70B's turn format"
    if "[INST]" in tpl and "<<SYS>>" in tpl:
        return "llama2", "its chat template is the Llama 2 [INST] format"
    if "codellama" in compact and "70b" in compact and "instruct" in compact:
        return "codellama70b", "it is named Code Llama 70B Instruct"
    if tpl:
        return "model", "it ships its own chat template"
    if _says_llama2_chat(compact):
        return "llama2", "it is a Llama 2 Chat / Code Llama Instruct model without a chat template"
    return "raw", ("it has no chat template and its name does not say Llama 2 Chat or Code "
                   "Llama Instruct: a base model, so plain completion")
