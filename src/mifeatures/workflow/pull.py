"""``mifeatures pull``: take results built elsewhere from the DVC remote, and mark up to date only what their
records say this checkout would make.

``dvc pull``; ``dvc status`` may differ only in code dependencies (``src``, ``workflow``), and then only where no
job's code digest changes (a comment, a docstring); then the reconciliation of ``mifeatures build``
(``mifeatures.workflow.reconcile``), under the config files the user names (``--configfile``, as Snakemake's), never
those the results were made with: every job whose records match the job the workflow would run for their paths
is marked up to date; any other is named, with why, and left for ``mifeatures build`` (make) to rerun.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mifeatures.workflow import usage
from mifeatures.workflow.reconcile import reconcile

# dvc.yaml's dependencies whose bytes may differ from the lock while every job's code digest is the same.
CODE_DEPENDENCIES = ("src", "workflow")
FINDINGS = "results/findings.md"  # present when the findings (target protocols) were built and pushed
REMEDY = "nothing was marked up to date. Build them: make, or dvc repro."
PARTLY = ("The jobs above were not made by what this checkout would run; what matches its records was marked up "
          "to date. `mifeatures build{configfiles}` (make) reruns exactly these and what reads them.")


class StaleResults(RuntimeError):
    """The pulled results were not made by this checkout's code and params, or could not be pulled."""


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True)


def status_problems(status: dict) -> list[str]:
    """What `dvc status --json` reports besides code dependencies whose bytes (not digests) changed.

    >>> status_problems({"build": [{"changed deps": {"src": "modified"}}]})
    []
    >>> status_problems({"build": [{"changed deps": {"params.yaml": {"train.lr": 0.0002}}}]})
    ["build: changed deps: {'params.yaml': {'train.lr': 0.0002}}"]
    """
    problems = []
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):
                problems.append(f"{stage}: {change}")
                continue
            for kind, items in change.items():
                rest = {name: what for name, what in items.items()
                        if not (kind == "changed deps" and name in CODE_DEPENDENCIES and what == "modified")}
                if rest:
                    problems.append(f"{stage}: {kind}: {rest}")
    return problems


def pull(configfiles: list[str]) -> None:
    """Pull, check, then mark up to date what matches; raise StaleResults on any mismatch (having marked nothing
    when DVC's own check fails, what matches otherwise)."""
    pulled = _run(["dvc", "pull"])
    if pulled.returncode:
        raise StaleResults(f"dvc pull failed:\n{pulled.stdout}{pulled.stderr}If it names files changed here, "
                           "commit or move them first (dvc checkout --force discards them); " + REMEDY)
    status = _run(["dvc", "status", "--json"])
    problems = status_problems(json.loads(status.stdout or "{}")) if not status.returncode else [status.stderr]
    if problems:
        raise StaleResults("dvc status:\n" + "\n".join(problems) + "\nThe pulled results were not built from "
                           "this checkout's code and params; " + REMEDY)
    targets = ["all", *(["protocols"] if Path(FINDINGS).exists() else [])]
    try:
        reconciliation = reconcile(["params.yaml", *configfiles], targets)
    except RuntimeError as error:
        raise StaleResults(f"{error}\n{REMEDY}") from error
    if reconciliation.stale:
        extra = "".join(f" --configfile {file}" for file in configfiles)
        raise StaleResults(f"{reconciliation.report()}\n{PARTLY.format(configfiles=extra)}")


def main(argv: list[str] | None = None) -> None:
    """CLI: pull results and mark them up to date, or say why not and exit 1."""
    parser = argparse.ArgumentParser(prog="mifeatures pull", description=usage.summary(__doc__))
    parser.add_argument("--configfile", nargs="+", default=[], metavar="FILE",
                        help="config files merged over params.yaml, as for snakemake and mifeatures build: the "
                             "results are checked against this config")
    args = parser.parse_args(argv)
    for file in args.configfile:
        if not Path(file).is_file():
            parser.error(f"--configfile {file}: no such file in {Path.cwd()}")
    try:
        pull(args.configfile)
    except StaleResults as error:
        print(f"mifeatures pull: {error}", file=sys.stderr)
        sys.exit(1)
    print("pulled results verified and marked up to date")


if __name__ == "__main__":
    main()
