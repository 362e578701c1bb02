"""Audit: show where figures came from and verify that nothing in their chain has changed since.

``mifeatures provenance FIGURE`` prints a figure's provenance chain as a tree. With ``--verify`` it
checks every record in the chain against the world as it is now:

- every file's bytes against the hash its consumer recorded, and against the hash in the file's own
  record (a table edited by hand after its stage wrote it is caught even if a figure was rebuilt on it);
- the code: a digest of each module a stage ran against the module now (``mifeatures.sources``);
- the params against the config files that made the figure (or those given with ``--params``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator

from mifeatures import sources
from mifeatures.io import atomic_write
from mifeatures.params import ParamsError, load_params, validate_params
from mifeatures.provenance import SUFFIX, sha256, sidecar

SCHEMA = Path(__file__).resolve().parents[2] / "workflow/schemas/params.schema.yaml"


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


def config_files(job: dict[str, Any]) -> list[str]:
    """The config files the job's workflow merged; params.yaml for records made outside the workflow."""
    return job.get("config_files") or ["params.yaml"]


def drift(figure: str | Path, params: dict[str, Any], code_root: Path = sources.ROOT) -> list[str]:
    """What no longer matches the figure's record: bytes, code (the package in ``code_root``) and
    params anywhere in its chain."""
    path = Path(figure)
    if not sidecar(path).exists():
        return [f"{path}: no provenance record ({sidecar(path)})"]
    job = json.loads(sidecar(path).read_text())
    problems = []
    files = {job["output"]["path"]: job["output"]["sha256"]}
    for current in chain(job):
        for entry in current["inputs"].values():
            files[entry["path"]] = entry["sha256"]
            made = entry.get("record", {}).get("output", {}).get("sha256")
            if made is not None and made != entry["sha256"]:
                problems.append(f"input {entry['path']}: its bytes when {current['stage']} read them differ from "
                                f"those {entry['record']['stage']} wrote (edited by hand in between?)")
        for module, digest in current["code"].get("modules", {}).items():
            name = Path(module).stem
            if not sources.path(name, code_root).is_file():
                problems.append(f"code {module}: ran in {current['stage']}, now missing")
            elif sources.module_digest(name, code_root) != digest:
                problems.append(f"code {module}: changed since {current['stage']} ran it")
        for key, value in current["params"].items():
            now = lookup(params, key, current["context"])
            if now != value:
                where = f" (case {current['context']['case']})" if "case" in current["context"] else ""
                problems.append(f"param {key}{where}: {value!r} when made, {now!r} now")
        seed, seeds = current["context"].get("seed"), lookup(params, "train.seeds", {})
        if seed is not None and (not isinstance(seeds, list) or seed not in seeds):
            problems.append(f"seed {seed} (case {current['context'].get('case')}): trained with it, not in "
                            f"train.seeds {seeds} now")
    for file, recorded in files.items():
        if not Path(file).exists():
            problems.append(f"input {file}: missing")
        elif sha256(file) != recorded:
            problems.append(f"input {file}: content changed since the figure was made")
        elif sidecar(file).exists():
            own = json.loads(sidecar(file).read_text())["output"]["sha256"]
            if own != recorded:
                problems.append(f"input {file}: its own record {sidecar(file)} gives other bytes")
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
    device = job["environment"].get("device")
    on = f" on {device}" if device else ""
    yield f"{indent}  made by {job['stage']}{context}{on} at {job['created']}: {job['command']}"
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
    datasets = {record["output"]["path"]: record for record in records if record["stage"] == "data"}
    for path, record in sorted(datasets.items()):
        origin = "".join(f", {key} {value}" for key, value in record["context"].items())
        yield f"  data: {path}  sha256:{record['output']['sha256'][:12]}{origin}"
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
    parser.add_argument("--params", nargs="+",
                        help="params files to compare with, later override earlier; default: the config files "
                             "that made each figure (params.yaml and any --configfile)")
    parser.add_argument("--schema", default=SCHEMA, help="params schema; default: %(default)s")
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
    drifted = 0
    for figure in figures:
        files = args.params or config_files(json.loads(sidecar(figure).read_text()) if sidecar(figure).exists() else {})
        try:
            params = load_params(files)
            validate_params(params, args.schema, source=" + ".join(files))
        except ParamsError as error:
            parser.exit(2, f"{error}\n")
        problems = drift(figure, params)
        drifted += bool(problems)
        print(f"{figure}: " + ("current" if not problems else "DRIFTED"))
        for problem in problems:
            print(f"  - {problem}")
    sys.exit(1 if drifted else 0)


if __name__ == "__main__":
    main()
