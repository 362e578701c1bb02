"""``mifeatures STAGE …``: one sub-command per workflow stage (the same as ``python -m mifeatures.STAGE``)."""

from __future__ import annotations

import importlib
import sys

STAGES = ("data", "grayscale", "train", "score", "aggregate", "figures", "params")


def main(argv: list[str] | None = None) -> None:
    """Dispatch to the stage module's own ``main``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STAGES:
        print(f"usage: mifeatures {{{','.join(STAGES)}}} [ARGS …]\n\n{__doc__}", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    importlib.import_module(f"mifeatures.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main()
