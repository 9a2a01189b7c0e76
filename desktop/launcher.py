"""The `corral` entry point: subcommands run headless in core; no subcommand opens the window.

Qt is imported only when the window is wanted, so `corral --help` stays fast. `corral FILE...`
hands the files to a window already running for this data folder, if there is one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def _open_window(screenshots: str | None, files: list[str]) -> int:
    from desktop.app import run_gui

    return run_gui(screenshots=screenshots, files=files)


def main(argv: Sequence[str] | None = None) -> int:
    from core.cli import main as cli_main

    return cli_main(argv, gui=_open_window)


if __name__ == "__main__":
    sys.exit(main())
