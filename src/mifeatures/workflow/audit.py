"""Audit: show where outputs came from and verify that the workflow, run now, would make exactly them.

``mifeatures provenance OUTPUT`` prints an output's provenance chain as a tree. ``--verify`` answers, for
each output (``--all``: every output the workflow declares under data/ and results/), "would the workflow,
run now, make exactly this file from exactly these inputs?", in the checkout it is run in, by the rule
``mifeatures build`` reruns by (``mifeatures.workflow.records``), applied to every record in the output's chain:

- the job: each record against the job the workflow's plan (``mifeatures.workflow.plan``, Snakemake's own DAG) has
  for the same path: its command (case, protocol, seed, image, every param, every input path, hence the
  dataset, the seeds and the cases it spans);
- the place: each record was written for the path it lies beside, each embedded record for its input's;
- every file's bytes against the hash its consumer recorded, and against the hash in the file's own
  record (a table edited by hand after its stage wrote it is caught even if a figure was rebuilt on it);
- the code: a digest of each module a stage ran against the module in the checkout's ``src/``;
- the params against the config files that made the output (or those given with ``--params``);
- apart, as its own verdict: the library versions each job ran with against this environment's.

An output that is missing, or has no record, is not current. Snakemake's local cache is not asked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

from mifeatures.workflow import provenance, records, sources, usage
from mifeatures.core.io import atomic_write
from mifeatures.workflow.params import ParamsError, case_train, load_params, validate_params
from mifeatures.workflow.plan import PlannedJob, needed_by, plan
from mifeatures.workflow.provenance import SUFFIX, sidecar
from mifeatures.workflow.reconcile import judge

SCHEMA = "workflow/schemas/params.schema.yaml"  # the checkout's own
_REEXEC = "MIFEATURES_AUDIT_OF_CHECKOUT"  # set in the process that verifies with the checkout's library


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
    value: Any = params
    if section == "train" and "case" in context:
        value, key = case_train(params, context["case"]), name
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return "(absent)"
        value = value[part]
    return value


def config_files(job: dict[str, Any]) -> list[str]:
    """The config files the job's workflow merged; params.yaml for records made outside the workflow."""
    return job.get("config_files") or ["params.yaml"]


def drift(figure: str | Path, params: dict[str, Any], code_root: Path = sources.ROOT,
          root: Path | None = None) -> list[str]:
    """What no longer holds of the figure's record and every record in its chain, whatever the workflow's plan
    (``records.record_problems``: place, bytes, code, embedded records; only regular files, inside ``root``
    when given), and the params they were made with against ``params``."""
    path = Path(figure)
    job, why = records.read(path)
    if job is None:
        return [f"{path}: {why}"]
    problems = []
    for current in chain(job):
        top = current is job
        problems += records.record_problems(path if top else current["output"]["path"], current, code_root, root,
                                            check_output=top)
        for key, value in current["params"].items():
            now = lookup(params, key, current["context"])
            if now != value:
                where = f" (case {current['context']['case']})" if "case" in current["context"] else ""
                problems.append(f"param {key}{where}: {value!r} when made, {now!r} now")
        seed, seeds = current["context"].get("seed"), lookup(params, "train.seeds", {})
        if seed is not None and (not isinstance(seeds, list) or seed not in seeds):
            problems.append(f"seed {seed} (case {current['context'].get('case')}): trained with it, not in "
                            f"train.seeds {seeds} now")
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
    datasets = {record["output"]["path"]: record for record in records if not record["inputs"]}  # made from nothing
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


def output_problems(path: str, producer: dict[str, PlannedJob], params: dict[str, Any], checkout: Path,
                    configfiles: list[str]) -> tuple[list[str], list[str]]:
    """(why ``path`` is not what the workflow, run now, would make: ``records.mismatches`` for it and every
    record in its chain, with the params behind them; the library versions it was made with that differ from
    this environment's). Both empty when it is current."""
    job = producer[path]
    if not Path(path).exists() or f"{path}{SUFFIX}" not in job.outputs:
        return records.mismatches(path, job, checkout), []
    record, why = records.read(path)
    if record is None:
        return [f"{why}, which the {job.rule} job writes beside it"], []
    problems = []
    for current in chain(record):
        made_for = current["output"]["path"]
        planned = producer.get(made_for)
        if planned is None:
            problems.append(f"{made_for}: made by {current['stage']}, but the workflow under "
                            f"{' + '.join(configfiles)} makes no such file")
        else:
            problems += records.identity_problems(made_for, current, planned)
    problems += drift(path, params, checkout / "src" / sources.PACKAGE, checkout)
    code_root = checkout / "src" / sources.PACKAGE
    changes = sorted({change for current in chain(record)
                      for change in records.environment_changes(current, code_root)})
    return problems, changes


def _record_config(paths: list[Path]) -> list[str]:
    """The config files of the first of ``paths`` that has a record; params.yaml if none has."""
    for path in paths:
        if sidecar(path).exists():
            return config_files(json.loads(sidecar(path).read_text()))
    return ["params.yaml"]


def verify(checkout: Path, figures: list[Path], every: bool, params_files: list[str] | None,
           schema: str | Path) -> int:
    """Print each output's verdict against the workflow's plan; return the number not current."""
    with contextlib.chdir(checkout):
        configfiles = params_files or _record_config(
            figures or sorted(Path("results/figures").glob("*.png")) or sorted(Path("results").rglob(f"*{SUFFIX}")))
        params = load_params(configfiles)
        validate_params(params, schema, source=" + ".join(configfiles))
        jobs = plan(".", configfiles, ["all", "protocols"])
        producer = {output: job for job in jobs for output in job.outputs}
        # A figure built on demand (any image's maps: `snakemake results/figures/maps_c_image12.png`) is no target
        # of `all`, but it is what the workflow makes for that path: planned with it as a target too.
        on_demand = [str(figure) for figure in figures if str(figure) not in producer]
        if on_demand:
            from snakemake.exceptions import MissingRuleException

            with contextlib.suppress(MissingRuleException):  # no rule makes such a path: not an output, said below
                jobs = plan(".", configfiles, ["all", "protocols", *on_demand])
                producer = {output: job for job in jobs for output in job.outputs}
        # What reads an output that reruns is not current either, though its own records still hold.
        remade_first = {output for job in judge(jobs, checkout.resolve()).downstream for output in job.outputs}
        if every:
            article = needed_by(jobs, "all")
            extra = [job for job in needed_by(jobs, "protocols") if job not in article]
            built = [job for job in extra if any(map(os.path.exists, job.outputs))]
            paths = [output for job in article + built for output in job.outputs if not output.endswith(SUFFIX)]
        else:
            paths = [str(figure) for figure in figures]
        failed = 0
        for path in paths:
            problems, changes = (output_problems(path, producer, params, checkout.resolve(), configfiles)
                                 if path in producer else
                                 ([f"not an output of the workflow under {' + '.join(configfiles)}"], []))
            if not problems and path in remade_first:
                problems = ["it reads what a job that reruns makes (`mifeatures build -n` names that job and why)"]
            failed += bool(problems or changes)
            verdict = "DRIFTED" if problems else "OTHER ENVIRONMENT" if changes else "current"
            print(f"{path}: {verdict}")
            for problem in problems:
                print(f"  - {problem}")
            for change in changes:
                print(f"  - environment: {change}")
        if every and len(built) < len(extra):
            print("(the findings' runs are not built: `snakemake protocols` builds them; nothing of them verified)")
    return failed


def main(argv: list[str] | None = None) -> None:
    """CLI: show or verify where figures came from."""
    parser = argparse.ArgumentParser(prog="mifeatures provenance", description=usage.summary(__doc__))
    parser.add_argument("figures", nargs="*", help="outputs (figures, tables) to show or verify")
    parser.add_argument("--all", action="store_true",
                        help="with --verify: every output the workflow declares under data/ and results/ (the "
                             "findings' too once built); otherwise every figure with a record in --figures-dir")
    parser.add_argument("--figures-dir", default="results/figures", help="default: %(default)s")
    parser.add_argument("--verify", action="store_true",
                        help="would the workflow, run now, make exactly these files from exactly these inputs? "
                             "exit 1 if not")
    parser.add_argument("--directory", default=".", type=Path,
                        help="the checkout whose workflow and src/ --verify uses; default: the current directory")
    parser.add_argument("--params", nargs="+",
                        help="params files to compare with, later override earlier, relative to the checkout; "
                             "default: the config files that made the outputs (params.yaml and any --configfile)")
    parser.add_argument("--schema", default=SCHEMA, help="params schema; default: %(default)s")
    parser.add_argument("--summary", metavar="OUT", help="write a short summary of every figure's record to OUT")
    args = parser.parse_args(argv)
    figures = [Path(f) for f in args.figures]
    if args.verify:
        checkout = args.directory
        if not (checkout / "workflow/Snakefile").is_file():
            parser.error(f"{checkout.resolve()} is not a mifeatures checkout (it has no workflow/Snakefile), so "
                         "there is no workflow to verify against: run this in the checkout or pass --directory")
        if not figures and not args.all:
            parser.error("name outputs to verify, or use --all")
        own = (checkout / "src" / sources.PACKAGE).resolve()
        if own.is_dir() and own != sources.ROOT and not os.environ.get(_REEXEC):
            # Verify with the checkout's own library (its code digests), not whichever copy is installed.
            path = os.pathsep.join(filter(None, [str(own.parent), os.environ.get("PYTHONPATH")]))
            result = subprocess.run([sys.executable, "-m", "mifeatures.workflow.audit",
                                     *(sys.argv[1:] if argv is None else argv)],
                                    env={**os.environ, "PYTHONPATH": path, _REEXEC: "1"})
            sys.exit(result.returncode)
        try:
            failed = verify(checkout, figures, args.all, args.params, (checkout / args.schema).resolve())
        except ParamsError as error:
            parser.exit(2, f"{error}\n")
        sys.exit(1 if failed else 0)
    if args.all:
        figures += sorted(p.with_name(p.name[: -len(SUFFIX)]) for p in Path(args.figures_dir).glob(f"*.png{SUFFIX}"))
    if not figures:
        parser.error("name figures or use --all")
    if args.summary:
        with atomic_write(args.summary, "w") as handle:
            for figure in figures:
                handle.write("\n".join(summary(json.loads(sidecar(figure).read_text()))) + "\n\n")
        # Its inputs are the figures' records, hashed with it, so its own record says which it summarised.
        summarised = {str(figure): sidecar(figure) for figure in figures}
        provenance.write([args.summary], provenance.record("provenance", summarised, {}))
        return
    for figure in figures:
        if not sidecar(figure).exists():
            parser.error(f"{figure}: no provenance record ({sidecar(figure)}); was it built by the workflow?")
        print("\n".join(render(json.loads(sidecar(figure).read_text()))), end="\n\n")


if __name__ == "__main__":
    main()
