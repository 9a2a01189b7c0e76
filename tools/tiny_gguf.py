"""Write a tiny random-weight llama GGUF that llama.cpp loads, tokenizes, streams and embeds in ms.

Vocabulary: SentencePiece-style (<unk>, <s>, </s>, 256 byte tokens, printable ASCII, and
"▁word" pieces with all their prefixes so SPM merges can reach them). Hidden channel 0 is a
constant 1.0 that no layer writes to, so after the final norm it is positive: output rows of
special and byte tokens get a large negative weight on it (never sampled, so generation never
stops early), and ``always`` picks one word whose row gets a large positive weight (the greedy
answer is always that word, e.g. "safe" for a guard model). ``then`` chains pieces after it:
each piece's embedding lights a channel of its own that only the next piece's output row reads
(nothing else writes there), so "safe" then "</s>" is a guard that answers exactly "safe".
"""

from __future__ import annotations

import string
from pathlib import Path

SPM_SPACE = "\u2581"

LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

WORDS = """the of and to in is it you that he was for on are as with his they at be this
have from or one had by word but not what all were we when your can said there use an each
which she do how their if will up other about out many then them these so some her would make
like him into time has look two more write go see number no way could people my than first
water been call who oil its now find long down day did get come made may part hello world
model models token tokens llama local chat embed embedding vector search query document
answer question test data file text user system assistant good new old big small fast slow
red blue green run stop start end yes ok please thanks help safe unsafe""".split()
CAPITALISED = "The A I You It This What How Hello Say Model Answer Question".split()
BARE = "INST SYS s ed ing er ly es".split()


def build_vocab() -> tuple[list[str], list[float], list[int], int]:
    import gguf

    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    seen: set[str] = set()

    def add(piece: str, score: float, ttype: int) -> None:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            scores.append(score)
            types.append(int(ttype))

    kind = gguf.TokenType
    add("<unk>", 0.0, kind.UNKNOWN)
    add("<s>", 0.0, kind.CONTROL)
    add("</s>", 0.0, kind.CONTROL)
    for b in range(256):
        add(f"<0x{b:02X}>", 0.0, kind.BYTE)
    n_blocked = len(tokens)
    add(SPM_SPACE, -1000.0, kind.NORMAL)
    for ch in string.ascii_letters + string.digits + string.punctuation:
        add(ch, -1000.0, kind.NORMAL)
    for w in WORDS + CAPITALISED:
        full = SPM_SPACE + w
        for k in range(2, len(full) + 1):
            add(full[:k], -100.0 + 10.0 * k, kind.NORMAL)
    for w in BARE:
        for k in range(2, len(w) + 1):
            add(w[:k], -200.0 + 10.0 * k, kind.NORMAL)
    return tokens, scores, types, n_blocked


def make_tiny_gguf(
    path: str | Path,
    *,
    seed: int = 0,
    always: str | None = None,
    then: tuple[str, ...] = (),
    chat_template: str | None = LLAMA2_CHAT_TEMPLATE,
    name: str = "tiny-random-llama",
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_ff: int = 128,
    n_ctx: int = 4096,
) -> Path:
    """Write the tiny model to ``path``. ``always``: a vocabulary piece greedy decoding picks;
    ``then``: the pieces it picks after that one, in order (each piece once, "</s>" ends)."""
    import gguf
    import numpy as np

    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens, scores, types, n_blocked = build_vocab()
    n_vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    def rnd(*shape: int, std: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    embd = rnd(n_vocab, n_embd)
    embd[:, 0] = 1.0  # the constant channel
    chain = [always, *then] if always is not None else []
    links = range(1, len(chain))  # channel k: "the last piece was chain[k - 1]"
    for k in links:
        embd[:, k] = 0.0
        embd[tokens.index(chain[k - 1]), k] = 10.0
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    out = rnd(n_vocab, n_embd, std=0.5)
    out[:, 0] = 0.0
    out[:n_blocked, :] = 0.0
    out[:n_blocked, 0] = -50.0
    if always is not None:
        out[tokens.index(always), 0] = 50.0
    for k in links:
        out[:, k] = 0.0
        out[tokens.index(chain[k]), k] = 20.0
    w.add_tensor("output.weight", out)
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for part in ("q", "k", "v"):
            w.add_tensor(p + f"attn_{part}.weight", rnd(n_embd, n_embd))
        o = rnd(n_embd, n_embd)
        o[0, :] = 0.0  # nothing writes into the constant channel
        o[1:len(chain), :] = 0.0  # ... nor into the chain's channels
        w.add_tensor(p + "attn_output.weight", o)
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", rnd(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", rnd(n_ff, n_embd))
        d = rnd(n_embd, n_ff)
        d[0, :] = 0.0
        d[1:len(chain), :] = 0.0
        w.add_tensor(p + "ffn_down.weight", d)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def make_tiny_lora(path: str | Path, *, word: str = SPM_SPACE + "llama", rank: int = 4,
                   n_embd: int = 64, n_in: int | None = None) -> Path:
    """Write a LoRA adapter GGUF for the tiny model: its update to ``output.weight`` adds the
    constant hidden channel to the logit of ``word``, so greedy decoding with the adapter
    always picks that word. ``n_in`` other than ``n_embd`` writes shapes that do not fit the
    model (an adapter llama.cpp refuses)."""
    import gguf
    import numpy as np

    path = Path(path)
    tokens = build_vocab()[0]
    lora_a = np.zeros((rank, n_in or n_embd), dtype=np.float32)  # ggml: [n_in, rank]
    lora_a[0, 0] = 1.0  # reads the constant channel
    lora_b = np.zeros((len(tokens), rank), dtype=np.float32)  # ggml: [rank, n_vocab]
    lora_b[tokens.index(word), 0] = 100.0
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))  # scale alpha / rank = 1
    w.add_tensor("output.weight.lora_a", lora_a)
    w.add_tensor("output.weight.lora_b", lora_b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
