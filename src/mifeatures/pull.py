"""``mifeatures pull``: take results built elsewhere from the DVC remote, refusing stale ones.

DVC restores files in no set order and Snakemake's metadata does not travel, so Snakemake would judge
them by mtime and rebuild; marking them up to date (``snakemake --touch``) is right only for results
that this checkout's code and params would build. So: ``dvc pull``; ``dvc status`` may differ only in
code dependencies (``src``, ``workflow``), and then only where no job's code digest changes (a comment,
a docstring); every output must pass ``mifeatures provenance --all --verify --pulled``, which compares
each record with the job the workflow would run for its path; only then ``snakemake --touch --forceall``
marks every job done with today's params and code, so that a later change reruns what it should.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# dvc.yaml's dependencies whose bytes may differ from the lock while every job's code digest is the same.
CODE_DEPENDENCIES = ("src", "workflow")
FINDINGS = "results/findings.md"  # present when the findings (target protocols) were built and pushed
REMEDY = "nothing was marked up to date. Build them: make, or dvc repro."


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


def pull(cores: int = 1) -> None:
    """Pull, check, then mark up to date; raise StaleResults (having marked nothing) on any mismatch."""
    pulled = _run(["dvc", "pull"])
    if pulled.returncode:
        raise StaleResults(f"dvc pull failed:\n{pulled.stdout}{pulled.stderr}If it names files changed here, "
                           "commit or move them first (dvc checkout --force discards them); " + REMEDY)
    status = _run(["dvc", "status", "--json"])
    problems = status_problems(json.loads(status.stdout or "{}")) if not status.returncode else [status.stderr]
    if problems:
        raise StaleResults("dvc status:\n" + "\n".join(problems) + "\nThe pulled results were not built from "
                           "this checkout's code and params; " + REMEDY)
    audit = _run([sys.executable, "-m", "mifeatures.audit", "--all", "--verify", "--pulled"])
    if audit.returncode:
        raise StaleResults(f"{audit.stdout}{audit.stderr}The pulled results do not match their inputs, code or "
                           "params (above); " + REMEDY)
    targets = ["all", *(["protocols"] if Path(FINDINGS).exists() else [])]
    touched = _run(["snakemake", "--cores", str(cores), "--touch", "--forceall", *targets])
    if touched.returncode:
        raise StaleResults(f"snakemake --touch failed:\n{touched.stdout}{touched.stderr}")


def main(argv: list[str] | None = None) -> None:
    """CLI: pull results and mark them up to date, or say why not and exit 1."""
    parser = argparse.ArgumentParser(prog="mifeatures pull", description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=1, help="for snakemake --touch; default: %(default)s")
    args = parser.parse_args(argv)
    try:
        pull(args.cores)
    except StaleResults as error:
        print(f"mifeatures pull: {error}", file=sys.stderr)
        sys.exit(1)
    print("pulled results verified and marked up to date")


if __name__ == "__main__":
    main()
