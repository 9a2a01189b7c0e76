"""Runs the API on uvicorn: as the CLI's own process (``serve_forever``, Ctrl-C stops it) or in
a thread of the window (``start`` / ``stop``), off the GUI thread.

It binds to loopback by default; any other address needs a token (``--token``,
``CORRAL_SERVE_TOKEN`` or the settings), which requests must present."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from core.config import Settings
from core.errors import CorralError

log = logging.getLogger("corral.serve")
TOKEN_ENV = "CORRAL_SERVE_TOKEN"
START_TIMEOUT_S = 15.0
GRACEFUL_S = 2


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(given: str | None, settings: Settings) -> str:
    """The token: given (``--token``), else ``CORRAL_SERVE_TOKEN``, else the settings'."""
    if given:
        return given
    return os.environ.get(TOKEN_ENV, "") or settings.serve.token


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        out.update(getattr(record, "fields", {}) or {})
        return json.dumps(out, ensure_ascii=False)


class ApiServer:
    """The API on one address; ``url`` once bound."""

    def __init__(self, settings: Settings, *, host: str | None = None, port: int | None = None,
                 token: str | None = None, history: bool | None = None) -> None:
        self.settings = settings
        self.host = (host or settings.serve.host or "127.0.0.1").strip()
        self.port = settings.serve.port if port is None else int(port)
        self.token = resolve_token(token, settings)
        if not is_loopback(self.host) and not self.token:
            raise CorralError(
                f"serving on {self.host} (not loopback) requires a token",
                hint=f"Give one with --token, {TOKEN_ENV} or Settings; clients then send it "
                     "as their API key.")
        if not 0 <= self.port <= 65535:
            raise CorralError(f"port {self.port} is not a TCP port (0-65535)")
        self.history = history
        self.state: Any = None
        self._server: Any = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.host, self.port
        if self._socket is not None:
            port = int(self._socket.getsockname()[1])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def _bind(self) -> socket.socket:
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            family, kind, proto, _name, address = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError as exc:
            raise CorralError(f"cannot listen on {self.host}:{self.port}: "
                              f"{exc.strerror or exc}",
                              hint="Another program may use that port: choose another with "
                                   "--port (or in Settings).") from None
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def _prepare(self) -> Any:
        import uvicorn

        from core.serve.app import ServeState, create_app

        self.state = ServeState(self.settings, self.token, history=self.history)
        app = create_app(self.settings, token=self.token, state=self.state)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=GRACEFUL_S)
        self._socket = self._bind()
        self._server = uvicorn.Server(config)
        return self._server

    def serve_forever(self, announce: Callable[[str], object] | None = None) -> None:
        """Serve in this (main) thread until Ctrl-C or SIGTERM; ``announce`` gets the URL
        once the address is bound."""
        server = self._prepare()
        assert self._socket is not None
        if announce is not None:
            announce(self.url)
        try:
            server.run(sockets=[self._socket])
        finally:
            self._close()

    def start(self) -> str:
        """Serve in a background thread; returns the URL once it accepts connections."""
        server = self._prepare()
        sock = self._socket
        failed: list[BaseException] = []

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # reported by start() or the next stop()
                failed.append(exc)

        self._thread = threading.Thread(target=serve, name="corral-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if failed or not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                reason = f": {failed[0]}" if failed else ""
                raise CorralError(f"the API did not start on {self.url}{reason}")
            time.sleep(0.01)
        log.info("serving the API on %s", self.url)
        return self.url

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: running answers are cancelled, then the thread ends."""
        if self._server is not None:
            self._server.should_exit = True
        if self.state is not None:
            self.state.close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close()

    def _close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def store_note(settings: Settings) -> str:
    """A sentence when knowledge bases cannot be served from here: the embedded store is owned
    by another Corral process (the window). Empty when this process can own it."""
    if settings.store.mode != "embedded":
        return ""
    from core.config import data_dir

    if not (data_dir() / "chroma").exists():
        return ""
    from core.errors import StoreLocked
    from core.rag.store import open_store

    try:
        open_store(settings)
    except StoreLocked as exc:
        return (f"{exc.message}. Knowledge-base search and grounded answers answer 503 here; "
                "switch on 'Serve the local API' in that window's Settings instead, or use a "
                "Chroma server (Settings, Document store).")
    except CorralError as exc:
        return f"the knowledge bases cannot be opened: {exc.sentence()}"
    return ""
