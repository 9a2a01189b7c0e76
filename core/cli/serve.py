"""`corral serve`: the OpenAI-compatible local API, guarded by the Safety settings and grounded
in knowledge bases, until Ctrl-C. It binds to loopback unless told otherwise; any other address
needs a token (--token, CORRAL_SERVE_TOKEN or the settings)."""

from __future__ import annotations

import argparse
import logging
import sys

from core.cli._common import load_settings

HELP = "an OpenAI-compatible local API, guarded and grounded"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: settings, 127.0.0.1); any other "
                             "than loopback requires a token")
    parser.add_argument("--port", type=int, default=None, help="port (default: settings, 8484)")
    parser.add_argument("--token", default=None,
                        help="API token clients must send (default: $CORRAL_SERVE_TOKEN, "
                             "else the settings')")
    parser.add_argument("--json-logs", action="store_true",
                        help="log one JSON object per line (each request: method, path, "
                             "status, ms)")


def _log_to_stderr(json_logs: bool) -> None:
    from core.serve.runner import JsonLogFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if json_logs else
                         logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("corral.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def run(args: argparse.Namespace) -> int:
    from core.serve.runner import ApiServer, store_note

    settings = load_settings()
    server = ApiServer(settings, host=args.host, port=args.port, token=args.token)
    _log_to_stderr(args.json_logs)
    note = store_note(settings)
    if note:
        logging.getLogger("corral.serve").warning("note: %s", note)
    guard = "on" if settings.safety.enabled and settings.safety.guard_model else "off"

    def announce(url: str) -> None:
        logging.getLogger("corral.serve").info(
            "Corral API on %s/v1 (token %s, guard %s, history %s); Ctrl-C stops it", url,
            "required" if server.token else "not required", guard,
            "kept" if settings.serve.history else "not kept", extra={"fields": {"url": url}})

    try:
        server.serve_forever(announce)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down cleanly
        pass
    logging.getLogger("corral.serve").info("stopped")
    return 0
