"""The bundle's entry point: ``corral ...`` exactly as the pip-installed command.

Corral starts its own child processes as ``sys.executable -m MODULE`` (the llama.cpp engine,
the document parser, the quantizer); in the bundle ``sys.executable`` is this program, so
``corral -m core.…`` runs that module here as ``python -m`` would. Nothing else is accepted.
"""

from __future__ import annotations

import runpy
import sys


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "-m":
        module = sys.argv[2]
        if not module.startswith("core."):
            print(f"corral: -m runs Corral's own child modules only, not {module}", file=sys.stderr)
            return 2
        sys.argv = [sys.argv[0], *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    from desktop.launcher import main as corral

    return corral()


if __name__ == "__main__":
    sys.exit(main())
