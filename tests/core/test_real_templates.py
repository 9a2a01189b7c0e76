"""Real models through the chat backend's prompt formats.

- SmolLM2's own ChatML template (the ``model`` format): Corral's sandboxed render equals
  llama-cpp-python's own Jinja2ChatFormatter byte for byte, and the token ids equal what
  llama-cpp-python's chat handler feeds the model, over generated conversations.
- Gemma 3 270M, a base model without a chat template: Auto picks plain completion (``raw``),
  and it continues the text instead of answering "[INST] ...".
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from core.chat.llama_backend import LlamaCppBackend
from core.chat.params import GenerationParams
from core.prompts.base import Message, as_messages

pytestmark = pytest.mark.real_model

TEXTS = ["Hello", "What is 2+2?", "café au lait, naïve façade", "日本語のテキスト", "中文 한국어",
         "😀🎉", "👨\u200d👩\u200d👧 family", "שלום עולם", "line one\nline two\n", "  padded  ",
         "\n", " ", "", "tabs\there", "Ünïcödé ß", "{{ not jinja }} {% raw %}", "e\u0301"]


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(TEXTS) for _ in range(rng.randint(1, 3)))


def conversation(rng: random.Random) -> list[dict[str, str]]:
    """With or without a system message, 1-4 user turns, the last one unanswered."""
    msgs = [{"role": "system", "content": random_text(rng)}] if rng.random() < 0.5 else []
    turns = rng.randint(1, 4)
    for turn in range(turns):
        msgs.append({"role": "user", "content": random_text(rng)})
        if turn < turns - 1:
            msgs.append({"role": "assistant", "content": random_text(rng)})
    return msgs


@pytest.fixture(scope="module")
def smol(smollm2: Path) -> Any:
    """(Corral's backend on a vocabulary engine, llama.cpp's vocabulary in this process,
    llama-cpp-python's formatter built exactly as ``Llama.__init__`` builds it)."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from core.models.pool import close_all, engine_pool

    backend = LlamaCppBackend(smollm2, engine=engine_pool().engine(smollm2, role="vocab"))
    reference = llama_cpp.Llama(model_path=str(smollm2), vocab_only=True, verbose=False)
    text_of = reference._model.token_get_text  # what Llama.__init__ passes as bos/eos_token
    formatter = Jinja2ChatFormatter(
        template=reference.metadata["tokenizer.chat_template"],
        eos_token=text_of(reference.token_eos()), bos_token=text_of(reference.token_bos()),
        stop_token_ids=[reference.token_eos()])
    yield backend, reference, formatter
    close_all()


def test_model_format_equals_llama_cpp_pythons_own_formatter(smol: Any) -> None:
    backend, reference, formatter = smol
    rng = random.Random(34359)
    seen_system = seen_default = 0
    for _ in range(60):
        msgs = conversation(rng)
        expected = formatter(messages=msgs)
        prepared = backend.prepare(as_messages(msgs), "model", "refuse")
        assert prepared.exact_text == expected.prompt, msgs  # byte for byte
        # what llama-cpp-python's chat handler tokenizes: BOS only if the prompt has none
        # (added_special), control-token texts parsed; SmolLM2's tokenizer adds no BOS
        ids = reference.tokenize(expected.prompt.encode(), add_bos=not expected.added_special,
                                 special=True)
        assert prepared.token_ids == ids, msgs
        if msgs[0]["role"] == "system":
            seen_system += 1
        else:  # SmolLM2's template writes its default system prompt itself
            assert "You are a helpful AI assistant named SmolLM" in prepared.exact_text
            seen_default += 1
        assert prepared.exact_text.endswith("<|im_start|>assistant\n")
    assert seen_system and seen_default


#: template constructs that chat templates on the Hub use (Llama 3's header blocks, Zephyr's
#: whitespace-heavy layout, tojson with and without indent, tools tests, strftime_now)
CONSTRUCTS = {
    "headers": "{% for message in messages %}{% set content = '<|start_header_id|>' + "
               "message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + "
               "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
               "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    "whitespace": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
                  "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% else %}\n"
                  "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token }}\n"
                  "{% endif %}\n{% if loop.last and add_generation_prompt %}\n"
                  "{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
    "json": "{{ messages | tojson }}{{ messages[0] | tojson(indent=2) }}"
            "{% if tools is not none %}tools{% endif %}{{ strftime_now('%Y') }}",
}


def test_model_format_equals_transformers_apply_chat_template(smollm2: Path) -> None:
    """The other reference implementation: Hugging Face transformers' own renderer, on
    SmolLM2's template and on common template constructs."""
    from transformers.utils.chat_template_utils import render_jinja_template

    from core.models.gguf_meta import read_gguf
    from core.prompts.template import render_chat_template

    templates = {"smollm2": str(read_gguf(smollm2).metadata["tokenizer.chat_template"]),
                 **CONSTRUCTS}
    rng = random.Random(2024)
    for name, source in templates.items():
        for _ in range(30):
            msgs = conversation(rng)
            [expected], _ = render_jinja_template(
                conversations=[msgs], chat_template=source, add_generation_prompt=True,
                bos_token="<s>", eos_token="</s>")
            ours = render_chat_template(source, msgs, bos_token="<s>", eos_token="</s>")
            assert ours == expected, (name, msgs)


# --- a base model gets plain completion ------------------------------------------------------

QUESTION = "The capital of France is"


@pytest.fixture(scope="module")
def gemma(gemma3: Path) -> Any:
    import llama_cpp

    from core.models.pool import close_all

    backend = LlamaCppBackend(gemma3, n_ctx=512, n_threads=1)
    reference = llama_cpp.Llama(model_path=str(gemma3), vocab_only=True, verbose=False)
    yield backend, reference
    close_all()


def greedy(backend: LlamaCppBackend, messages: list[Message], fmt: str) -> str:
    prompt = backend.prepare(messages, fmt, "refuse")
    params = GenerationParams(temperature=0.0, repeat_penalty=1.0, max_tokens=16)
    return "".join(ev.text for ev in backend.stream(prompt, params))


def test_auto_gives_gemma_base_plain_completion(gemma: Any) -> None:
    backend, reference = gemma
    info = backend.info()
    assert not info.has_template
    assert info.format == "raw" and "base model" in info.format_reason
    prompt = backend.prepare([Message("user", QUESTION)], info.format, "refuse")
    assert prompt.exact_text == "<bos>" + QUESTION  # the text as written, after its BOS
    assert prompt.token_ids == reference.tokenize(QUESTION.encode(), add_bos=True, special=False)
    answer = greedy(backend, [Message("user", QUESTION)], info.format)
    assert answer.strip() and "[INST]" not in answer and "[/INST]" not in answer
    # a base model continues text: it knows its facts when the text leads there
    assert greedy(backend, [Message("user", "Paris is the capital of")], "raw").startswith(
        " France")


def test_a_conversation_reaches_a_base_model_as_plain_text(gemma: Any) -> None:
    backend, _ = gemma
    msgs = [Message("system", "Answer in one word."),
            Message("user", "Q: What is the capital of France?\nA:")]
    prompt = backend.prepare(msgs, "raw", "refuse")
    assert prompt.exact_text == "<bos>Answer in one word.\n\nQ: What is the capital of France?\nA:"
    assert greedy(backend, msgs, "raw").split()[0] == "Paris"
