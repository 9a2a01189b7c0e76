"""Where Ollama listens: settings, else OLLAMA_HOST, else 127.0.0.1:11434 (FORMATS.md 4.1)."""

from __future__ import annotations

import os
import urllib.parse

DEFAULT_PORT = 11434


def resolve_host(configured: str = "") -> str:
    """A base URL such as ``http://127.0.0.1:11434``; 0.0.0.0 / :: mean this machine."""
    raw = (configured or os.environ.get("OLLAMA_HOST", "")).strip().strip("\"'")
    if not raw:
        return f"http://127.0.0.1:{DEFAULT_PORT}"
    scheme, _, hostport = raw.partition("://")
    if not hostport:
        scheme, hostport = "http", raw
    default_port = {"http": 80, "https": 443}[scheme] if "://" in raw else DEFAULT_PORT
    split = urllib.parse.urlsplit(f"{scheme}://{hostport}")
    host = split.hostname or "127.0.0.1"
    try:
        port = split.port or default_port
    except ValueError:
        port = default_port
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    path = split.path.rstrip("/")
    return f"{scheme}://{host}:{port}{path}"
