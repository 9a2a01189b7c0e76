"""The llama.cpp engine child process: loads one GGUF and answers requests over a pipe.

Run as ``python -m core.models.engine_child``. Requests are JSON lines on stdin, replies JSON
lines on a private copy of stdout (fd 1 itself is pointed at stderr so that anything
llama.cpp prints cannot corrupt the protocol). A malformed model may abort() this process;
the parent (core.models.engine) turns that into EngineCrashed and starts a fresh child.

Each request carries an id (``rid``); ``{"op": "cancel", "rid": N}`` stops request N at
once: llama.cpp's abort callback ends a decode (prompt or token) and the load progress
callback ends a load. While a request runs, a heartbeat line tells the parent it is alive.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

_ATTR_NAMES = {
    1: "unknown", 2: "unused", 4: "normal", 8: "control", 16: "user_defined", 32: "byte",
}
HEARTBEAT_S = float(os.environ.get("CORRAL_ENGINE_HEARTBEAT_S") or 1.0)  # tests shorten it


def _abort_callback(flag: Any) -> Any:
    """llama.cpp's abort callback, asked between the nodes of every compute graph (~1000
    times a token): libc's strlen on a 2-byte buffer answers 0 or 1 without Python, so a
    cancellable decode costs nothing. A Python callback is the fallback."""
    import llama_cpp

    try:
        libc = ctypes.cdll.msvcrt if sys.platform == "win32" else ctypes.CDLL(None)
        address = ctypes.cast(libc.strlen, ctypes.c_void_p).value
        if address:
            return llama_cpp.ggml_abort_callback(address)
    except (OSError, AttributeError):
        pass
    return llama_cpp.ggml_abort_callback(lambda _data: bool(flag[0] != b"\x00"))


class _Child:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.llm: Any = None
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.current = 0  # id of the request being served (0: none)
        self.cancelled = 0  # id of the last request cancelled
        self.abort = ctypes.create_string_buffer(2)  # abort[0] = 1: llama.cpp stops decoding
        self._abort_cb: Any = None
        self._send_lock = threading.Lock()
        #: the last prompt generate read, and where the batch that gave its last logits began
        self._read: tuple[list[int], int] | None = None

    # --- plumbing ------------------------------------------------------------------

    def send(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        with self._send_lock:
            self.out.write(data)
            self.out.flush()

    def is_cancelled(self) -> bool:
        return self.current != 0 and self.cancelled == self.current

    def reader(self) -> None:
        for line in sys.stdin.buffer:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("op") == "cancel":
                # A cancel always follows its request on this pipe, so it is never early.
                self.cancelled = int(msg.get("rid") or self.current)
                if self.is_cancelled():
                    self.abort[0] = b"\x01"
            else:
                self.inbox.put(msg)
        self.inbox.put(None)

    def heartbeat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            if self.current:
                with contextlib.suppress(OSError, ValueError):
                    self.send({"hb": 1})

    def serve(self) -> None:
        threading.Thread(target=self.reader, daemon=True).start()
        threading.Thread(target=self.heartbeat, daemon=True).start()
        self.send({"ready": True, "pid": os.getpid()})
        while True:
            msg = self.inbox.get()
            if msg is None:
                return
            op = str(msg.get("op"))
            handler = getattr(self, "op_" + op, None)
            self.current = int(msg.get("rid") or -1)
            self.abort[0] = b"\x01" if self.is_cancelled() else b"\x00"
            try:
                if handler is None:
                    raise ValueError(f"unknown request {op!r}")
                if op != "load" and self.llm is None:
                    raise RuntimeError("no model loaded")
                result = handler(msg)
                if result is not None:
                    self.send({"ok": True, **result})
            except Exception as exc:  # report, keep serving
                if self.is_cancelled():
                    self.send({"ok": False, "cancelled": True})
                else:
                    self.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            finally:
                self.current = 0

    # --- requests ------------------------------------------------------------------

    def op_load(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        import llama_cpp
        from llama_cpp import Llama

        if self.llm is not None:
            self.llm.close()  # free the old weights and context before the new ones load
            self.llm = None
        if self.is_cancelled():
            self.send({"ok": False, "cancelled": True})
            return None
        with self._load_progress():
            self.llm = Llama(
                model_path=msg["path"],
                n_ctx=int(msg.get("n_ctx", 2048)),
                n_threads=int(msg.get("n_threads", 1)),
                n_threads_batch=int(msg.get("n_threads", 1)),
                n_gpu_layers=int(msg.get("n_gpu_layers", 0)),
                embedding=bool(msg.get("embedding", False)),
                vocab_only=bool(msg.get("vocab_only", False)),
                lora_path=msg.get("lora_path") or None,
                seed=int(msg.get("seed", 0xFFFFFFFF)),
                verbose=False,
            )
        llm = self.llm
        if self.is_cancelled():  # the Stop came after the last progress report
            llm.close()
            self.llm = None
            self.send({"ok": False, "cancelled": True})
            return None
        ctx = getattr(getattr(llm, "_ctx", None), "ctx", None)
        if ctx is not None:
            if self._abort_cb is None:
                self._abort_cb = _abort_callback(self.abort)
            llama_cpp.llama_set_abort_callback(ctx, self._abort_cb,
                                               ctypes.cast(self.abort, ctypes.c_void_p))
        meta = {str(k): str(v) for k, v in (llm.metadata or {}).items()}
        add_bos = meta.get("tokenizer.ggml.add_bos_token", "true").lower() != "false"
        return {
            "n_ctx": llm.n_ctx(),
            "n_ctx_train": llm._model.n_ctx_train(),
            "n_vocab": llm.n_vocab(),
            "bos": llm.token_bos(),
            "eos": llm.token_eos(),
            "add_bos": add_bos,
            "metadata": meta,
            "chat_template": meta.get("tokenizer.chat_template"),
        }

    @contextlib.contextmanager
    def _load_progress(self) -> Iterator[None]:
        """Report llama.cpp's own load progress as {"progress": fraction} lines; a cancel
        makes the callback answer False, which stops the load."""
        import llama_cpp.llama_cpp as lib

        last = [-1.0]

        def report(fraction: float, _user: Any) -> bool:
            if fraction - last[0] >= 0.05 or fraction >= 1.0:
                last[0] = fraction
                self.send({"progress": round(float(fraction), 3)})
            return not self.is_cancelled()

        callback = lib.llama_progress_callback(report)
        original = lib.llama_model_default_params

        def with_progress() -> Any:
            params = original()
            params.progress_callback = callback
            return params

        lib.llama_model_default_params = with_progress
        try:
            yield
        finally:
            lib.llama_model_default_params = original

    def op_tokenize(self, msg: dict[str, Any]) -> dict[str, Any]:
        ids = self.llm.tokenize(
            msg["text"].encode("utf-8"),
            add_bos=bool(msg.get("add_bos", False)),
            special=bool(msg.get("special", False)),
        )
        return {"ids": ids}

    def op_detokenize(self, msg: dict[str, Any]) -> dict[str, Any]:
        data = self.llm.detokenize(msg["ids"], special=bool(msg.get("special", False)))
        return {"b64": base64.b64encode(data).decode()}

    def op_pieces(self, msg: dict[str, Any]) -> dict[str, Any]:
        pieces = [self.llm.detokenize([t], special=True) for t in msg["ids"]]
        return {"b64": [base64.b64encode(p).decode() for p in pieces]}

    def op_types(self, msg: dict[str, Any]) -> dict[str, Any]:
        import llama_cpp

        vocab = self.llm._model.vocab
        names = []
        for t in msg["ids"]:
            attr = int(llama_cpp.llama_vocab_get_attr(vocab, int(t)))
            names.append(next((n for bit, n in _ATTR_NAMES.items() if attr & bit), "normal"))
        return {"types": names}

    def op_specials(self, msg: dict[str, Any]) -> dict[str, Any]:
        import llama_cpp

        vocab = self.llm._model.vocab
        wanted = 8 | 16  # control, user_defined
        ids = [t for t in range(self.llm.n_vocab())
               if int(llama_cpp.llama_vocab_get_attr(vocab, t)) & wanted]
        pieces = [self.llm.detokenize([t], special=True) for t in ids]
        return {"b64": [base64.b64encode(p).decode() for p in pieces]}

    def op_probs(self, msg: dict[str, Any]) -> dict[str, Any]:
        import llama_cpp
        import numpy as np

        llm, ids = self.llm, [int(i) for i in msg["ids"]]
        # Reuse the cached prefix (the guard asks right after reading the same prompt and its
        # answer): only the tokens past it are read, at least the last one for its logits.
        keep = self._keep(self._cached_prefix(ids[:-1]))
        if self._read is not None and keep < self._read[1]:
            self._read = None  # what precedes that prompt's last batch is read anew
        llm.eval(ids[keep:])
        # Without logits_all, llama-cpp-python keeps no scores; read the last row from the context.
        row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).astype(np.float64)
        logits -= logits.max()
        probs = np.exp(logits)
        probs /= probs.sum()
        return {"probs": {str(c): float(probs[int(c)]) for c in msg["candidates"]}}

    def op_score(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Next-token log-probabilities over a token sequence (the workshop's perplexity and
        KL divergence), as llama.cpp's perplexity tool does: the ids are cut into chunks of
        ``chunk`` tokens, each evaluated from an empty cache, and the second half of each
        chunk is scored. Returns each scored token's negative log-likelihood and the model's
        top token; ``out`` names a .npy file for the scored rows' log-softmax (float32)."""
        import numpy as np
        from llama_cpp._internals import LlamaBatch

        llm, ids = self.llm, [int(i) for i in msg["ids"]]
        chunk = min(int(msg["chunk"]), llm.n_ctx(), llm.n_batch)
        n_vocab = llm.n_vocab()
        batch: Any = LlamaBatch(n_tokens=chunk, embd=0, n_seq_max=1, verbose=False)
        nll: list[float] = []
        top: list[int] = []
        rows: list[Any] = []
        started = time.perf_counter()
        evaluated = 0
        try:
            for start in range(0, len(ids) - chunk + 1, chunk):
                if self.is_cancelled():
                    raise RuntimeError("cancelled")
                part = ids[start:start + chunk]
                llm._ctx.kv_cache_clear()
                batch.set_batch(part, n_past=0, logits_all=True)
                llm._ctx.decode(batch)
                evaluated += len(part)
                logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(chunk, n_vocab))
                scored = logits[chunk // 2:chunk - 1].astype(np.float64)
                scored -= scored.max(axis=1, keepdims=True)
                logp = scored - np.log(np.exp(scored).sum(axis=1, keepdims=True))
                targets = np.asarray(part[chunk // 2 + 1:chunk])
                nll.extend((-logp[np.arange(len(targets)), targets]).tolist())
                top.extend(logp.argmax(axis=1).tolist())
                if msg.get("out"):
                    rows.append(logp.astype(np.float32))
        finally:
            batch.close()
            llm.reset()
        if msg.get("out") and rows:
            np.save(msg["out"], np.concatenate(rows))
        return {"nll": nll, "top": top, "evaluated": evaluated,
                "seconds": time.perf_counter() - started}

    def op_embed(self, msg: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        vectors = []
        for text in msg["texts"]:
            out = np.asarray(self.llm.embed(text), dtype=np.float64)
            if out.ndim == 2:  # a model without pooling gives one vector per token: average
                out = out.mean(axis=0)
            vectors.append(out.tolist())
        return {"vectors": vectors}

    def _reuse(self, prompt: list[int]) -> int:
        """Set the cache up for reading ``prompt`` and return how many of its tokens are kept.

        A prompt that shares a prefix with the cache reads only the rest (llama-cpp-python's
        own rule). The same prompt again (Regenerate, a repeated API call) is read again from
        where the batch that gave its last logits began, as the first reading did: llama-cpp-
        python would read just its last token, whose logits differ slightly from a batch's,
        so a greedy answer could change."""
        keep = self._cached_prefix(prompt)
        if prompt and keep == len(prompt):
            read = self._read
            keep = read[1] if read is not None and read[0] == prompt else 0
        keep = self._keep(keep)  # llama-cpp-python then reuses exactly this prefix
        n_batch = self.llm.n_batch
        self._read = (prompt, keep + max(0, len(prompt) - keep - 1) // n_batch * n_batch)
        return keep

    def _cached_prefix(self, ids: list[int]) -> int:
        """How many leading ``ids`` the context already holds."""
        llm, n = self.llm, 0
        for cached, wanted in zip(llm.input_ids[:llm.n_tokens], ids, strict=False):
            if int(cached) != wanted:
                break
            n += 1
        return n

    def _keep(self, n: int) -> int:
        """Keep the first ``n`` cached tokens and drop the rest; none if this model's cache
        cannot be cut (llama.cpp refuses for some). Returns how many were kept."""
        llm = self.llm
        if n > 0 and llm._ctx.kv_cache_seq_rm(-1, n, -1):
            llm.n_tokens = n
            return n
        llm.reset()
        return 0

    def op_generate(self, msg: dict[str, Any]) -> None:
        prompt = list(msg["ids"])
        stop_ids = {int(i) for i in msg.get("stop_ids") or ()}
        counted = 0
        stopped_by_id = False

        def stop_check(ids: Any, _logits: Any) -> bool:
            nonlocal counted, stopped_by_id
            counted += 1
            if self.is_cancelled():
                return True
            # ids ends with the last token already yielded; a control token among stop_ids
            # has produced no text, so stopping one step later loses nothing.
            if stop_ids and counted > 1 and int(ids[-1]) in stop_ids:
                stopped_by_id = True
                return True
            return False

        from llama_cpp import StoppingCriteriaList

        started = time.perf_counter()
        first: float | None = None
        finish: str | None = None
        params: dict[str, Any] = {
            "max_tokens": int(msg.get("max_tokens", 256)),
            "temperature": float(msg.get("temperature", 0.8)),
            "top_p": float(msg.get("top_p", 0.95)),
            "top_k": int(msg.get("top_k", 40)),
            "repeat_penalty": float(msg.get("repeat_penalty", 1.1)),
            "stop": list(msg.get("stop") or []) or None,
        }
        if msg.get("seed") is not None:
            params["seed"] = int(msg["seed"])
        # Tokens are batched by time (~15 ms) so the pipe costs nothing per token.
        buffered: list[str] = []
        last_flush = started
        try:
            if self.is_cancelled():
                raise RuntimeError("cancelled before it started")
            reuse = self._reuse(prompt)
            stream = self.llm.create_completion(
                prompt, stream=True, stopping_criteria=StoppingCriteriaList([stop_check]),
                **params)
            for chunk in stream:
                choice = chunk["choices"][0]
                text = choice.get("text") or ""
                if text:
                    if first is None:
                        first = time.perf_counter() - started
                        self.send({"text": text, "n": counted})
                        last_flush = time.perf_counter()
                    else:
                        buffered.append(text)
                finish = choice.get("finish_reason") or finish
                now = time.perf_counter()
                if buffered and now - last_flush >= 0.015:
                    self.send({"text": "".join(buffered), "n": counted})
                    buffered.clear()
                    last_flush = now
        except RuntimeError:  # llama_decode returned 2: the abort callback stopped it
            if not self.is_cancelled():
                raise
            counted += 1  # every token sampled so far was kept
        if buffered:
            self.send({"text": "".join(buffered), "n": counted})
        if self.is_cancelled():
            finish = "cancelled"
        elif stopped_by_id:
            finish = "stop"
        self.send({
            "done": True,
            "finish_reason": finish or "stop",
            "prompt_tokens": len(prompt),
            "prompt_evaluated": min(int(self.llm.n_tokens), len(prompt)),
            "prompt_read": len(prompt) - reuse,  # what this request decoded of it
            # The sampler runs once more than tokens are kept (the EOS, the token past
            # max_tokens, or the one a cancel refused).
            "completion_tokens": max(counted - 1, 0),
            "first_token_s": first,
            "total_s": time.perf_counter() - started,
        })
        return None

    def op_unload(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.llm is not None:
            self.llm.close()
        self.llm = None
        return {}

    def op_ping(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid()}


def main() -> None:
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # llama.cpp (and anything else) printing to stdout goes to stderr
    sys.stdout = sys.stderr
    import llama_cpp  # noqa: F401  (now, while the parent checks the file)

    _Child(proto).serve()


if __name__ == "__main__":
    main()
