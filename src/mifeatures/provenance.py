"""Provenance: which inputs, parameters, code and environment made each output, back to the dataset.

Every stage writes ``OUTPUT.prov.json`` beside each output, in the same job and atomically. A
record holds the sha256 of every input file and embeds the inputs' own records, so a figure's
record is the whole chain down to the raw dataset. ``mifeatures provenance`` prints that chain
and, with ``--verify``, re-hashes it and compares its parameters with params.yaml.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import torch

from mifeatures.io import atomic_write

SUFFIX = ".prov.json"
PACKAGES = ("torch", "numpy", "pandas", "scikit-image", "matplotlib", "snakemake", "dvc")


def sidecar(path: str | Path) -> Path:
    """Where the record of ``path`` lives."""
    return Path(f"{path}{SUFFIX}")


def sha256(path: str | Path) -> str:
    """Content hash of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def code_identity() -> dict[str, Any]:
    """Package version, and the git commit of the source tree and whether it had local changes."""
    source = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=source, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "mifeatures": importlib.metadata.version("mifeatures"),
        "git_commit": commit.strip() if commit else None,
        "git_dirty": bool(status.strip()) if status is not None else None,
    }


@functools.cache
def environment() -> dict[str, Any]:
    """Python, platform and the versions of the packages that can change the numbers."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": platform.python_version(), "platform": platform.platform(), **versions,
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def record(stage: str, inputs: dict[str, str | Path], params: dict[str, Any], context: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    """The record of one job: its inputs (hashed, with their own records), params, code and environment.

    ``params`` maps params.yaml keys (``train.lr``) to the values the job used; ``context`` holds
    what selects among them (the case, whose per-case overrides apply).
    """
    return {
        "stage": stage,
        "command": " ".join([Path(sys.executable).name, "-m", f"mifeatures.{stage}", *sys.argv[1:]]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "context": context or {},
        "params": params,
        "inputs": {role: _input(path) for role, path in inputs.items()},
        "code": code_identity(),
        "environment": environment(),
    }


def _input(path: str | Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": str(path), "sha256": sha256(path)}
    if sidecar(path).exists():
        entry["record"] = json.loads(sidecar(path).read_text())
    return entry


def write(outputs: list[str | Path], job: dict[str, Any]) -> None:
    """Write the record of each output (with the output's own hash) beside it, atomically."""
    for output in outputs:
        with atomic_write(sidecar(output), "w") as handle:
            json.dump({"output": {"path": str(output), "sha256": sha256(output)}, **job}, handle, indent=1)
            handle.write("\n")


def png_metadata(job: dict[str, Any]) -> dict[str, str]:
    """The essentials of a record as PNG text chunks: code, params and direct input hashes."""
    return {
        "Software": f"mifeatures {job['code']['mifeatures']}",
        "mifeatures:code": json.dumps(job["code"], sort_keys=True),
        "mifeatures:params": json.dumps(job["params"], sort_keys=True),
        "mifeatures:inputs": json.dumps({entry["path"]: entry["sha256"] for entry in job["inputs"].values()}),
    }


def chain(job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every record in the chain, the given one first, each record once."""
    seen = set()
    stack = [job]
    while stack:
        current = stack.pop()
        key = current["output"]["path"] if "output" in current else id(current)
        if key in seen:
            continue
        seen.add(key)
        yield current
        stack.extend(entry["record"] for entry in reversed(current["inputs"].values()) if "record" in entry)


def lookup(params: dict[str, Any], key: str, context: dict[str, Any]) -> Any:
    """The value ``key`` has in ``params`` for ``context``: train keys honour the case's overrides."""
    section, _, name = key.partition(".")
    if section == "train" and "case" in context:
        overrides = params.get("train", {}).get("overrides", {}).get(context["case"], {})
        if name in overrides:
            return overrides[name]
    value: Any = params
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return "(absent)"
        value = value[part]
    return value


def drift(figure: str | Path, params: dict[str, Any]) -> list[str]:
    """What no longer matches the figure's record: file hashes in its chain, and params."""
    path = Path(figure)
    if not sidecar(path).exists():
        return [f"{path}: no provenance record ({sidecar(path)})"]
    job = json.loads(sidecar(path).read_text())
    problems = []
    files = {job["output"]["path"]: job["output"]["sha256"]}
    for current in chain(job):
        files.update({entry["path"]: entry["sha256"] for entry in current["inputs"].values()})
        for key, value in current["params"].items():
            now = lookup(params, key, current["context"])
            if now != value:
                where = f" (case {current['context']['case']})" if "case" in current["context"] else ""
                problems.append(f"param {key}{where}: {value!r} when made, {now!r} now")
    for file, recorded in files.items():
        if not Path(file).exists():
            problems.append(f"input {file}: missing")
        elif sha256(file) != recorded:
            problems.append(f"input {file}: content changed since the figure was made")
    return sorted(set(problems))


def render(job: dict[str, Any], indent: str = "", shown: set[str] | None = None) -> Iterator[str]:
    """A readable tree: each output, the job that made it, its params and inputs; each record once."""
    shown = set() if shown is None else shown
    output = job.get("output", {})
    yield f"{indent}{output.get('path', '?')}  sha256:{output.get('sha256', '?')[:12]}"
    if output.get("path") in shown:
        yield f"{indent}  (made as shown above)"
        return
    shown.add(output.get("path"))
    params = ", ".join(f"{key}={value!r}" for key, value in job["params"].items()) or "none"
    context = "".join(f" [{key} {value}]" for key, value in job["context"].items())
    yield f"{indent}  made by {job['stage']}{context} at {job['created']}: {job['command']}"
    yield f"{indent}  params: {params}"
    for role, entry in job["inputs"].items():
        if "record" in entry:
            yield f"{indent}  <- {role}:"
            yield from render(entry["record"], indent + "     ", shown)
        else:
            yield f"{indent}  <- {role}: {entry['path']}  sha256:{entry['sha256'][:12]} (source data)"


def summary(job: dict[str, Any]) -> Iterator[str]:
    """A few lines per figure: its hash, code, source data and every param in its chain (per case)."""
    records = list(chain(job))
    code = job["code"]
    dirty = {True: ", with local changes", False: "", None: ""}[code["git_dirty"]]
    yield f"{job['output']['path']}  sha256:{job['output']['sha256'][:12]}  made {job['created']}"
    yield f"  code: mifeatures {code['mifeatures']}, commit {(code['git_commit'] or 'unknown')[:12]}{dirty}"
    sources = {entry["path"]: entry["sha256"] for record in records for entry in record["inputs"].values()
               if "record" not in entry and record["stage"] == "grayscale"}
    for path, digest in sorted(sources.items()):
        yield f"  data: {path}  sha256:{digest[:12]}"
    values: dict[str, dict[str, list[str]]] = {}
    for record in records:
        for key, value in record["params"].items():
            cases = values.setdefault(key, {}).setdefault(json.dumps(value), [])
            if "case" in record["context"] and record["context"]["case"] not in cases:
                cases.append(record["context"]["case"])
    for key in sorted(values):
        variants = [value + (f" (case {', '.join(sorted(cases))})" if cases else "")
                    for value, cases in values[key].items()]
        yield f"  {key} = {'; '.join(variants)}"


def main(argv: list[str] | None = None) -> None:
    """CLI: show or verify where figures came from."""
    parser = argparse.ArgumentParser(prog="mifeatures provenance", description=__doc__.splitlines()[0])
    parser.add_argument("figures", nargs="*", help="figure PNGs; with --all, every figure in --figures-dir")
    parser.add_argument("--all", action="store_true", help="every figure that has a record in --figures-dir")
    parser.add_argument("--figures-dir", default="results/figures", help="default: %(default)s")
    parser.add_argument("--verify", action="store_true", help="re-hash inputs, compare params; exit 1 on drift")
    parser.add_argument("--params", nargs="+", default=["params.yaml"],
                        help="params files to compare with, later override earlier; default: params.yaml")
    parser.add_argument("--summary", metavar="OUT", help="write a short summary of every figure's record to OUT")
    args = parser.parse_args(argv)
    figures = [Path(f) for f in args.figures]
    if args.all:
        figures += sorted(p.with_name(p.name[: -len(SUFFIX)]) for p in Path(args.figures_dir).glob(f"*.png{SUFFIX}"))
    if not figures:
        parser.error("name figures or use --all")
    if args.summary:
        with atomic_write(args.summary, "w") as handle:
            for figure in figures:
                handle.write("\n".join(summary(json.loads(sidecar(figure).read_text()))) + "\n\n")
        return
    if not args.verify:
        for figure in figures:
            if not sidecar(figure).exists():
                parser.error(f"{figure}: no provenance record ({sidecar(figure)}); was it built by the workflow?")
            print("\n".join(render(json.loads(sidecar(figure).read_text()))), end="\n\n")
        return
    from mifeatures.params import load_params

    params = load_params(args.params)
    drifted = 0
    for figure in figures:
        problems = drift(figure, params)
        drifted += bool(problems)
        print(f"{figure}: " + ("current" if not problems else "DRIFTED"))
        for problem in problems:
            print(f"  - {problem}")
    sys.exit(1 if drifted else 0)


if __name__ == "__main__":
    main()
