"""Adapter over the official ``ollama`` client: timeouts always set, every failure typed.

Failures map to core.errors: nobody listening -> BackendUnavailable; 404 -> ModelNotFound;
no answer in time -> BackendTimeout; 503 and other statuses -> BackendError(status=...);
an ``{"error": ...}`` line or a dropped connection in the middle of a reply ->
StreamInterrupted with the text that had arrived in ``partial`` (a stall after some text is
treated the same way, so nothing already shown is lost). ``cancel()`` (from any thread) stops
the client's streams at once, also one the server has not begun to answer (its connection is
closed); they raise Cancelled. The records it returns are in ``ollama_records``.
"""

from __future__ import annotations

import builtins
import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from core.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    Cancelled,
    CorralError,
    ModelNotFound,
    StreamInterrupted,
)
from core.models.ollama_host import resolve_host
from core.models.ollama_records import (
    LoadedModel,
    OllamaChunk,
    OllamaModel,
    OllamaModelDetails,
    PullProgress,
)

QUICK_TIMEOUT_S = 30.0  # list/show/ps/version/delete: answers that need no model load


class OllamaClient:
    """Talks to one Ollama server. Host: argument, else OLLAMA_HOST, else 127.0.0.1:11434."""

    def __init__(self, host: str | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 300.0) -> None:
        self.host = resolve_host(host or "")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._clients: dict[float, Any] = {}
        self._lock = threading.Lock()
        self._sockets: list[Any] = []  # of this client's open connections, for cancel()
        self._generation = 0  # bumped by cancel(); a stream started earlier then stops
        self._started = threading.local()  # .generation: when this thread's stream began

    @classmethod
    def from_settings(cls, settings: Any) -> OllamaClient:
        o = settings.ollama
        return cls(o.host or None, o.connect_timeout, o.read_timeout)

    def __repr__(self) -> str:
        return f"OllamaClient({self.host!r})"

    def _client(self, read_timeout: float) -> Any:
        client = self._clients.get(read_timeout)
        if client is None:
            import httpx
            import ollama

            timeout = httpx.Timeout(read_timeout, connect=self.connect_timeout)
            client = ollama.Client(host=self.host, timeout=timeout,
                                   trust_env=not self._loopback(),
                                   event_hooks={"request": [self._on_request]})
            self._clients[read_timeout] = client
        return client

    def _loopback(self) -> bool:
        import urllib.parse

        host = urllib.parse.urlsplit(self.host).hostname or ""
        return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")

    @property
    def _quick(self) -> float:
        return min(self.read_timeout, QUICK_TIMEOUT_S)

    def _on_request(self, request: Any) -> None:
        # httpcore reports each new connection to a "trace" callback, so the socket is known
        # before any answer comes: cancel() can cut a request Ollama has not answered yet
        # (it sends nothing while it loads the model and reads the prompt).
        request.extensions["trace"] = self._trace

    def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            return
        with self._lock:
            self._sockets = [s for s in self._sockets if s.fileno() != -1]
            self._sockets.append(sock)
            began = getattr(self._started, "generation", None)
            late = began is not None and began != self._generation
        if late:  # cancelled while this thread's stream was connecting
            _shut(sock)

    def cancel(self) -> None:
        """Stop every stream of this client now (any thread): they raise Cancelled.

        The sockets are shut down, so the server sees the client go away (Ollama stops a
        pull or a generation when its client disconnects), also before it has answered.
        """
        with self._lock:
            self._generation += 1
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client._client.close()
        self._clients.clear()

    # --- error mapping ---------------------------------------------------------------

    def _map(self, exc: BaseException, *, model: str = "", partial: str | None = None,
             timeout: float | None = None) -> CorralError:
        """The typed error for anything the client or httpx raised."""
        import httpx
        import ollama

        where = f"Ollama at {self.host}"
        if isinstance(exc, CorralError):
            return exc
        if isinstance(exc, ollama.ResponseError):
            status = exc.status_code
            message = str(exc.error).strip()
            if status == -1:  # an {"error": ...} line in the middle of a stream
                return StreamInterrupted(f"{where} stopped with an error: {message}",
                                         partial=partial or "")
            if status == 404:
                return ModelNotFound(f"{where} has no model '{model}'" if model
                                     else f"{where}: {message}",
                                     hint=f"Pull it first: corral models pull {model}".rstrip())
            if status == 503:
                return BackendError(f"{where} is busy (503: {message})", status=503,
                                    hint="Wait a moment and try again.")
            return BackendError(f"{where} answered with an error ({status}): {message}",
                                status=status)
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError)):
            return BackendUnavailable(f"Ollama is not running at {self.host}")
        if isinstance(exc, httpx.TimeoutException):
            seconds = f"{timeout:g} s" if timeout else "the time limit"
            if partial:
                return StreamInterrupted(f"{where} stopped answering (nothing for {seconds})",
                                         partial=partial)
            return BackendTimeout(f"{where} did not answer within {seconds}",
                                  hint="Check the server, or raise the timeout in Settings.")
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            if partial is not None:
                return StreamInterrupted(f"the connection to {where} broke off mid-reply",
                                         partial=partial)
            return BackendError(f"the connection to {where} broke off")
        if isinstance(exc, (ValueError, TypeError, KeyError)):  # bad JSON, pydantic
            return BackendError(f"{where} answered something Corral does not understand "
                                f"({type(exc).__name__})")
        if isinstance(exc, httpx.HTTPError):
            return BackendError(f"talking to {where} failed: {exc}")
        raise exc

    def _call(self, fn: Any, *, model: str = "", timeout: float | None = None) -> Any:
        import httpx
        import ollama

        try:
            return fn()
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError, ValueError,
                TypeError, KeyError) as exc:
            raise self._map(exc, model=model, timeout=timeout) from exc

    # --- simple calls ----------------------------------------------------------------

    def _raw_json(self, method: str, path: str, body: Any = None) -> Any:
        """A JSON call through the client's own httpx session (for what it does not expose)."""
        client = self._client(self._quick)

        def call() -> Any:
            import ollama

            r = client._client.request(method, path, json=body)
            if r.status_code >= 400:
                raise ollama.ResponseError(r.text, r.status_code)
            return r.json()

        model = str(body.get("model", "")) if isinstance(body, dict) else ""
        return self._call(call, model=model, timeout=self._quick)

    def version(self) -> str:
        """The server version (``GET /api/version``; the client has no method for it)."""
        doc = self._raw_json("GET", "/api/version")
        return str(doc.get("version", "")) if isinstance(doc, dict) else ""

    def is_running(self) -> bool:
        try:
            self.version()
            return True
        except CorralError:
            return False

    def list(self) -> list[OllamaModel]:
        resp = self._call(lambda: self._client(self._quick).list(), timeout=self._quick)
        out = []
        for m in resp.models:
            d = m.details
            out.append(OllamaModel(
                name=str(m.model or ""), size=int(m.size or 0), digest=str(m.digest or ""),
                modified_at=str(m.modified_at or ""),
                family=str(getattr(d, "family", "") or ""),
                parameter_size=str(getattr(d, "parameter_size", "") or ""),
                quantization=str(getattr(d, "quantization_level", "") or ""),
                format=str(getattr(d, "format", "") or "")))
        return out

    def show(self, name: str) -> OllamaModelDetails:
        # Raw JSON: the client's ShowResponse drops "system".
        r = self._raw_json("POST", "/api/show", {"model": name})
        if not isinstance(r, dict):
            raise BackendError(f"Ollama at {self.host} answered something Corral does not "
                               "understand")
        d = r.get("details") or {}
        info = r.get("model_info") or {}
        return OllamaModelDetails(
            name=name, modelfile=str(r.get("modelfile") or ""),
            template=str(r.get("template") or ""), system=str(r.get("system") or ""),
            parameters=str(r.get("parameters") or ""), license=str(r.get("license") or ""),
            family=str(d.get("family") or ""), parameter_size=str(d.get("parameter_size") or ""),
            quantization=str(d.get("quantization_level") or ""),
            model_info=dict(info) if isinstance(info, dict) else {},
            capabilities=[str(c) for c in (r.get("capabilities") or [])])

    def delete(self, name: str) -> None:
        self._call(lambda: self._client(self._quick).delete(name), model=name,
                   timeout=self._quick)

    def ps(self) -> builtins.list[LoadedModel]:
        resp = self._call(lambda: self._client(self._quick).ps(), timeout=self._quick)
        out = []
        for m in resp.models:
            out.append(LoadedModel(name=str(m.model or m.name or ""), size=int(m.size or 0),
                                   size_vram=int(m.size_vram or 0),
                                   context_length=m.context_length,
                                   expires_at=str(m.expires_at or "")))
        return out

    def embed(self, model: str, texts: Sequence[str]) -> builtins.list[builtins.list[float]]:
        resp = self._call(lambda: self._client(self.read_timeout).embed(model, list(texts)),
                          model=model, timeout=self.read_timeout)
        return [[float(x) for x in v] for v in resp.embeddings]

    # --- streams ---------------------------------------------------------------------

    def _stream(self, make: Any, *, model: str, keep_text: bool) -> Iterator[Any]:
        """Iterate a client stream, mapping errors; ``partial`` = text seen so far."""
        import httpx
        import ollama

        seen: list[str] = []
        finished = False
        stream = None
        generation = self._started.generation = self._generation
        try:
            stream = make()
            for part in stream:
                if self._generation != generation:
                    raise Cancelled("cancelled")
                if keep_text:
                    seen.append(_text_of(part))
                if getattr(part, "done", False):
                    finished = True
                yield part
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError, ValueError,
                TypeError, KeyError) as exc:
            if self._generation != generation:
                raise Cancelled("cancelled") from exc
            raise self._map(exc, model=model, partial="".join(seen),
                            timeout=self.read_timeout) from exc
        finally:
            self._started.generation = None
            if stream is not None and hasattr(stream, "close"):
                stream.close()  # closes the HTTP response: a cancelled pull stops at once
        if keep_text and not finished:
            raise StreamInterrupted(f"Ollama at {self.host} ended the reply early",
                                    partial="".join(seen))

    def chat(self, model: str, messages: Sequence[Mapping[str, Any]],
             options: Mapping[str, Any] | None = None, **extra: Any) -> Iterator[OllamaChunk]:
        """Stream a chat reply. ``extra``: keep_alive, format, think, tools."""
        client = self._client(self.read_timeout)

        def make() -> Any:
            return client.chat(model=model, messages=[dict(m) for m in messages], stream=True,
                               options=dict(options) if options else None, **extra)

        for part in self._stream(make, model=model, keep_text=True):
            yield _chunk(part)

    def generate_raw(self, model: str, prompt: str, options: Mapping[str, Any] | None = None,
                     **extra: Any) -> Iterator[OllamaChunk]:
        """Stream a completion of ``prompt`` exactly as given (``raw``: no template)."""
        client = self._client(self.read_timeout)

        def make() -> Any:
            return client.generate(model=model, prompt=prompt, raw=True, stream=True,
                                   options=dict(options) if options else None, **extra)

        for part in self._stream(make, model=model, keep_text=True):
            yield _chunk(part)

    def pull(self, name: str) -> Iterator[PullProgress]:
        """Stream pull progress; the last item has ``done``. Closing the iterator cancels."""
        client = self._client(self.read_timeout)
        totals: dict[str, tuple[int, int]] = {}
        shown: float | None = None
        success = False
        try:
            for part in self._stream(lambda: client.pull(name, stream=True), model=name,
                                     keep_text=False):
                status = str(part.status or "")
                digest = str(part.digest or "")
                total, completed = int(part.total or 0), int(part.completed or 0)
                if digest and total:
                    totals[digest] = (min(completed, total), total)
                whole = sum(t for _, t in totals.values())
                if whole:
                    # Layers arrive one after another, so the total grows: never go back,
                    # and keep 1.0 for "success".
                    now = sum(c for c, _ in totals.values()) / whole
                    shown = min(max(shown or 0.0, now), 0.99)
                success = status == "success"
                yield PullProgress(status, digest, total, completed,
                                   1.0 if success else shown, success)
        except StreamInterrupted as exc:
            import ollama

            if not isinstance(exc.__cause__, ollama.ResponseError):
                raise StreamInterrupted(f"pulling {name} broke off: {exc.message}") from exc
            if "file does not exist" in exc.message:
                raise ModelNotFound(f"the Ollama library has no model '{name}'",
                                    hint="Check the name on ollama.com/library.") from exc
            message = str(exc.__cause__.error).strip()
            raise BackendError(f"pulling {name} failed: {message}") from exc
        if not success:
            raise StreamInterrupted(f"pulling {name} ended before it was complete")

    def create(self, model: str, from_: str, *, template: str | None = None,
               system: str | None = None, parameters: Mapping[str, Any] | None = None,
               license: str | None = None) -> None:
        """Create ``model`` from ``from_`` with another template/system/parameters."""
        client = self._client(self.read_timeout)

        def make() -> Any:
            return client.create(model=model, from_=from_, template=template, system=system,
                                 parameters=dict(parameters) if parameters else None,
                                 license=license, stream=True)

        last = ""
        for part in self._stream(make, model=from_, keep_text=False):
            last = str(part.status or "")
        if last != "success":
            raise BackendError(f"creating {model} did not finish (last status: {last!r})")


def _shut(sock: Any) -> None:
    # socket.socket's own shutdown: an SSLSocket's would drop its TLS state under the thread
    # that is reading it
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _text_of(part: Any) -> str:
    message = getattr(part, "message", None)
    if message is not None:
        return str(getattr(message, "content", "") or "")
    return str(getattr(part, "response", "") or "")


def _chunk(part: Any) -> OllamaChunk:
    message = getattr(part, "message", None)
    thinking = str(getattr(message, "thinking", "") or "") if message is not None else str(
        getattr(part, "thinking", "") or "")
    return OllamaChunk(
        text=_text_of(part), done=bool(getattr(part, "done", False)),
        done_reason=getattr(part, "done_reason", None), thinking=thinking,
        prompt_eval_count=getattr(part, "prompt_eval_count", None),
        eval_count=getattr(part, "eval_count", None),
        eval_duration_ns=getattr(part, "eval_duration", None),
        prompt_eval_duration_ns=getattr(part, "prompt_eval_duration", None),
        total_duration_ns=getattr(part, "total_duration", None),
        load_duration_ns=getattr(part, "load_duration", None),
        logprobs=list(getattr(part, "logprobs", None) or []) or None,
    )

