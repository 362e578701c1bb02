"""``mifeatures COMMAND …``: one sub-command per workflow stage, plus the checks and the audit.

Each is the same as ``python -m mifeatures.MODULE`` (``provenance``: ``mifeatures.workflow.audit``; ``build``:
``mifeatures.workflow.reconcile``).
"""

from __future__ import annotations

import importlib
import sys

import mifeatures

# Sub-command → (module, what it does); ``provenance`` shows and verifies records, the audit module's job.
COMMANDS = {
    "sample": ("stages.sample", "make the embedded sample (rule sample)"),
    "download": ("stages.download", "download STL-10 and extract its train split (rule download)"),
    "grayscale": ("stages.grayscale", "grayscale and resize the images to one size (rule grayscale)"),
    "train": ("stages.train", "train one encoder and its critics with DeepInfoMax (rule train)"),
    "score": ("stages.score", "score every map of every image by its MI with the image (rule score)"),
    "maps": ("stages.maps", "one image's maps and MI bounds, as a scorer computes them (rule maps)"),
    "crosscheck": ("stages.crosscheck", "KSG k-NN MI of a seeded subsample of pairs (rule crosscheck)"),
    "aggregate": ("stages.aggregate", "per-case and per-image tables, metrics.json (rule aggregate)"),
    "findings": ("stages.findings", "does the article's claim survive? results/findings.md (rule findings)"),
    "figures": ("stages.figures", "draw one figure (rules figure_*)"),
    "article": ("stages.article", "the article's printed losses beside this run's (rule article_check)"),
    "params": ("workflow.params", "check params.yaml and override files as the workflow does"),
    "provenance": ("workflow.audit", "show an output's provenance, or verify it is what the workflow would make"),
    "build": ("workflow.reconcile",
              "run the workflow, rerunning exactly the jobs whose records do not match (make, dvc repro)"),
    "pull": ("workflow.pull", "dvc pull results built elsewhere and mark up to date what their records say is current"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    listed = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    return (f"usage: mifeatures [--help] [--version] COMMAND [ARGS …]\n\n{__doc__.splitlines()[0]}\n\n"
            f"commands:\n{listed}\n\n`mifeatures COMMAND --help` describes a command's arguments.\n")


def _usage_error(message: str) -> None:
    print(f"{usage()}\nmifeatures: error: {message}", file=sys.stderr)
    sys.exit(2)  # as argparse exits on a usage error


def main(argv: list[str] | None = None) -> None:
    """Dispatch to the command's module's own ``main``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        _usage_error("a command is required")
    if argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return
    if argv[0] == "--version":
        print(f"mifeatures {mifeatures.__version__}")
        return
    if argv[0] not in COMMANDS:
        _usage_error(f"invalid command {argv[0]!r} (choose from {', '.join(COMMANDS)})")
    importlib.import_module(f"mifeatures.{COMMANDS[argv[0]][0]}").main(argv[1:])


if __name__ == "__main__":
    main()
