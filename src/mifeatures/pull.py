"""``mifeatures pull``: take results built elsewhere from the DVC remote, refusing stale ones.

DVC restores files in no set order, so Snakemake would judge them by mtime and rebuild; marking
them up to date (``snakemake --touch``) is right only for results that this checkout's code and
params would build. So: ``dvc pull``; then ``dvc status`` must be clean and every figure must pass
``mifeatures provenance --all --verify``; only then ``snakemake --touch all``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


class StaleResults(RuntimeError):
    """The pulled results were not made by this checkout's code and params."""


def pull(cores: int = 1) -> None:
    """Pull, check, then mark up to date; raise StaleResults (having touched nothing) on any mismatch."""
    subprocess.run(["dvc", "pull"], check=True)
    status = subprocess.run(["dvc", "status"], capture_output=True, text=True, check=True).stdout
    if "up to date" not in status:
        raise StaleResults(f"dvc status:\n{status}\nThe pulled results were not built from this checkout's "
                           "code and params; nothing was marked up to date. Build them: make, or dvc repro.")
    audit = subprocess.run([sys.executable, "-m", "mifeatures.audit", "--all", "--verify"],
                           capture_output=True, text=True)
    if audit.returncode:
        raise StaleResults(f"{audit.stdout}{audit.stderr}The pulled figures do not match their inputs, code or "
                           "params (above); nothing was marked up to date. Build them: make, or dvc repro.")
    subprocess.run(["snakemake", "--cores", str(cores), "--touch", "all"], check=True)


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
