"""``mifeatures COMMAND …``: one sub-command per workflow stage, plus ``params`` and ``provenance``.

Each is the same as ``python -m mifeatures.MODULE`` (``provenance``: ``mifeatures.audit``).
"""

from __future__ import annotations

import importlib
import sys

# Sub-command → module; ``provenance`` shows and verifies records, which is the audit module's job.
STAGES = ("data", "grayscale", "train", "score", "crosscheck", "aggregate", "findings", "figures", "article")
COMMANDS = {name: name for name in (*STAGES, "params", "pull")} | {"provenance": "audit"}


def main(argv: list[str] | None = None) -> None:
    """Dispatch to the stage module's own ``main``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(f"usage: mifeatures {{{','.join(COMMANDS)}}} [ARGS …]\n\n{__doc__}", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    importlib.import_module(f"mifeatures.{COMMANDS[argv[0]]}").main(argv[1:])


if __name__ == "__main__":
    main()
