"""``mifeatures COMMAND …``: one sub-command per workflow stage, plus ``params`` and ``provenance``.

Each is the same as ``python -m mifeatures.COMMAND``.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = ("data", "grayscale", "train", "score", "aggregate", "figures", "params", "provenance")


def main(argv: list[str] | None = None) -> None:
    """Dispatch to the stage module's own ``main``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(f"usage: mifeatures {{{','.join(COMMANDS)}}} [ARGS …]\n\n{__doc__}", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    importlib.import_module(f"mifeatures.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main()
