"""One window per data folder: a second `corral [FILE...]` hands its files to the window
already running and exits, instead of opening a second store owner.

The running window listens on a local socket named from the data folder (and the user); a
client sends one JSON line ``{"files": [...]}`` and waits for ``ok``. A socket left behind
by a killed window answers nobody: the next window removes it and listens in its place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

log = logging.getLogger("corral.desktop")

TIMEOUT_MS = 2000
MAX_MESSAGE = 1 << 20  # a megabyte of paths is plenty; more is not a Corral talking


def server_name(data_dir: Path) -> str:
    """The socket name for windows on ``data_dir``: short, stable, one per user and folder."""
    key = f"{os.getuid() if hasattr(os, 'getuid') else ''}:{data_dir.resolve()}"
    return "corral-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]


def send_files(name: str, files: list[str], timeout_ms: int = TIMEOUT_MS) -> bool:
    """Hand ``files`` (absolute paths; none just raises the window) to the window listening
    on ``name``. False when no window answers."""
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(timeout_ms):
        return False
    try:
        socket.write((json.dumps({"files": files}) + "\n").encode("utf-8"))
        if not socket.waitForBytesWritten(timeout_ms):
            return False
        reply = b""
        while b"\n" not in reply and socket.waitForReadyRead(timeout_ms):
            reply += bytes(socket.readAll().data())
        return reply.strip() == b"ok"
    finally:
        socket.abort()


class InstanceServer(QObject):
    """Listens for other `corral` processes; emits the files each one hands over."""

    files_received = Signal(list)  # list[str]: absolute paths (maybe empty: just show up)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.server = QLocalServer(self)
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self.server.newConnection.connect(self._accept)
        self._buffers: dict[QLocalSocket, bytes] = {}

    def listen(self, name: str) -> bool:
        """Listen on ``name``, taking over a socket a dead window left behind. False when
        another live window holds it."""
        if self.server.listen(name):
            return True
        if send_files(name, [], timeout_ms=500):
            return False  # alive: the caller hands its files over instead
        log.info("removing a stale single-instance socket %s", name)
        QLocalServer.removeServer(name)
        return self.server.listen(name)

    def close(self) -> None:
        self.server.close()

    def _accept(self) -> None:
        while self.server.hasPendingConnections():
            socket = self.server.nextPendingConnection()
            self._buffers[socket] = b""
            socket.readyRead.connect(lambda s=socket: self._read(s))
            socket.disconnected.connect(lambda s=socket: self._forget(s))

    def _read(self, socket: QLocalSocket) -> None:
        data = self._buffers.get(socket, b"") + bytes(socket.readAll().data())
        if len(data) > MAX_MESSAGE:
            socket.abort()
            return
        self._buffers[socket] = data
        if b"\n" not in data:
            return
        try:
            files = json.loads(data.split(b"\n", 1)[0])["files"]
            if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                raise ValueError("files is not a list of paths")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored a malformed single-instance message: %s", exc)
            socket.abort()
            return
        socket.write(b"ok\n")
        socket.flush()
        socket.disconnectFromServer()
        self.files_received.emit(files)

    def _forget(self, socket: QLocalSocket) -> None:
        self._buffers.pop(socket, None)
        socket.deleteLater()


def hand_over_or_serve(data_dir: Path, files: list[str], parent: QObject | None = None
                       ) -> InstanceServer | None:
    """None when a running window took ``files`` (this process should exit); else a server
    that now listens for the next `corral` on this data folder."""
    name = server_name(data_dir)
    if send_files(name, files):
        return None
    server = InstanceServer(parent)
    if not server.listen(name) and send_files(name, files):
        return None  # another window started at the same moment and won
    return server
