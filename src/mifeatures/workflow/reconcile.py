"""``mifeatures build``: Snakemake run over the records that travel with the outputs, not over its local cache.

Snakemake decides what to rerun from ``.snakemake/`` (mtimes, and the params and code it saw), which stays on
the machine; the provenance records travel with the outputs (DVC pushes, pulls and checks them out). Where files
moved without ``.snakemake/`` (``dvc checkout``, ``dvc exp run``, ``dvc pull``, a copy) the two disagree. So
every entry point (make, the DVC stage, ``mifeatures pull``) first reconciles them, by one rule
(``records.mismatches``):

1. plan every job of the targets with Snakemake's own DAG, under the config the user gives;
2. a job whose outputs' records all match the job planned for their paths is up to date: where Snakemake's
   cache says otherwise it is marked done (``snakemake --touch``), and its records are noted in the ledger;
3. a job with any output whose record does not match (or is missing or unreadable) is rerun
   (``--forcerun``), and with it everything downstream, which Snakemake's own triggers then rerun;
4. nothing else reruns. Library versions are not part of the rule: the audit reports them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mifeatures.workflow import records, usage
from mifeatures.workflow.params import ParamsError, load_params
from mifeatures.workflow.plan import PlannedJob, plan
from mifeatures.workflow.provenance import LEDGER, SUFFIX, note, sidecar

# Set for the Snakemake runs this module starts: their outputs are reconciled, so the Snakefile's warning about
# records from elsewhere would be wrong there.
RECONCILED_VARIABLE = "MIFEATURES_RECONCILED"


@dataclass(frozen=True)
class Reconciliation:
    stale: list[tuple[PlannedJob, list[str]]]  # jobs to rerun, with why, output by output
    downstream: list[PlannedJob]  # jobs that read what a stale job makes, rerun with it
    current: list[PlannedJob]  # jobs whose records match
    touch: list[PlannedJob]  # of those, the ones Snakemake's cache would rerun or does not know

    def report(self) -> str:
        lines = [f"mifeatures build: {len(self.current)} jobs match their records, {len(self.stale)} do not"
                 + (f" ({len(self.downstream)} more downstream of them)" if self.downstream else "")
                 + (f"; {len(self.touch)} marked up to date for Snakemake" if self.touch else "")]
        for job, problems in self.stale:
            lines.append(f"  rerun {describe(job)}")
            lines += [f"    - {problem}" for problem in problems[:3]]
            if len(problems) > 3:
                lines.append(f"    - … and {len(problems) - 3} more")
        return "\n".join(lines)


def describe(job: PlannedJob) -> str:
    """``rule key=value …``: a job as the report names it."""
    return " ".join([job.rule, *(f"{key}={value}" for key, value in job.wildcards.items())])


def recorded_outputs(job: PlannedJob) -> list[str]:
    """The job's outputs that carry a record (all but the records themselves)."""
    return [output for output in job.outputs if f"{output}{SUFFIX}" in job.outputs]


def judge(jobs: list[PlannedJob], root: Path) -> Reconciliation:
    """Split the planned jobs by the rule: stale (with why), downstream of stale, current; reads only."""
    stale = {}
    for index, job in enumerate(jobs):
        problems = list(dict.fromkeys(problem for output in recorded_outputs(job)
                                      for problem in records.mismatches(output, job, root)))
        if job.outputs and not recorded_outputs(job) and job.rerun:  # no record to judge by: Snakemake's word
            problems = [f"Snakemake: {job.rerun}"]
        if problems:
            stale[index] = problems
    made_by = {output: index for index, job in enumerate(jobs) for output in job.outputs}
    rerun = set(stale)
    changed = True
    while changed:  # close over readers: a job reading any output of a rerun job reruns
        changed = False
        for index, job in enumerate(jobs):
            if index not in rerun and any(made_by.get(path) in rerun for path in job.inputs):
                rerun.add(index)
                changed = True
    current = [job for index, job in enumerate(jobs) if index not in rerun and recorded_outputs(job)]
    return Reconciliation([(jobs[index], problems) for index, problems in stale.items()],
                          [job for index, job in enumerate(jobs)
                           if index in rerun and index not in stale and job.outputs],
                          current, [job for job in current if job.rerun or not job.cached])


def snakemake_command(configfiles: list[str], cores: str, *args: str) -> list[str]:
    extra = [file for file in configfiles if Path(file) != Path("params.yaml")]
    return ["snakemake", "--cores", cores, *(["--configfile", *extra] if extra else []), *args]


def mark_current(reconciliation: Reconciliation, configfiles: list[str]) -> None:
    """Make Snakemake's cache and the ledger agree with the records of the current jobs."""
    if reconciliation.touch:
        # Forced, so that a job Snakemake would not rerun but has no metadata for is marked too; every job these
        # targets need is current, since whatever a current job reads is.
        targets = [output for job in reconciliation.touch for output in recorded_outputs(job)]
        touched = subprocess.run(snakemake_command(configfiles, "1", "--touch", "--quiet", "--forcerun", *targets,
                                                   "--", *targets),
                                 env={**os.environ, RECONCILED_VARIABLE: "1"}, capture_output=True, text=True)
        if touched.returncode:
            raise RuntimeError(f"snakemake --touch failed:\n{touched.stdout}{touched.stderr}")
    for job in reconciliation.current:
        for output in recorded_outputs(job):
            note(sidecar(output), LEDGER)


def reconcile(configfiles: list[str], targets: list[str], dry_run: bool = False) -> Reconciliation:
    """Plan, judge, and (unless ``dry_run``) mark the current jobs up to date; in the working directory."""
    reconciliation = judge(plan(".", configfiles, targets), Path.cwd())
    if not dry_run:
        mark_current(reconciliation, configfiles)
    return reconciliation


def main(argv: list[str] | None = None) -> None:
    """CLI: reconcile, then run Snakemake with the stale jobs forced."""
    parser = argparse.ArgumentParser(
        prog="mifeatures build", description=usage.summary(__doc__),
        epilog="Arguments after -- go to snakemake as they are, e.g. `mifeatures build -- --keep-going`.")
    parser.add_argument("targets", nargs="*", default=["all"], help="Snakemake targets; default: all")
    parser.add_argument("--configfile", nargs="+", default=[], metavar="FILE",
                        help="config files merged over params.yaml, as snakemake's --configfile")
    parser.add_argument("--cores", default="all",
                        help="as snakemake's; default: %(default)s (how many jobs run at once, their mem_mb "
                             "decides too)")
    parser.add_argument("-n", "--dry-run", action="store_true",
                        help="say which jobs rerun and why, run nothing and write nothing")
    argv = sys.argv[1:] if argv is None else argv
    passed = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    configfiles = ["params.yaml", *args.configfile]
    for file in args.configfile:
        if not Path(file).is_file():
            parser.error(f"--configfile {file}: no such file in {Path.cwd()}")
    try:
        load_params(configfiles)
    except ParamsError as error:
        parser.exit(2, f"{error}\n")
    try:
        reconciliation = reconcile(configfiles, args.targets, args.dry_run)
    except RuntimeError as error:
        parser.exit(1, f"mifeatures build: {error}\n")
    print(reconciliation.report(), file=sys.stderr)
    if args.dry_run:
        for job in reconciliation.downstream:
            print(f"  rerun {describe(job)} (it reads what a job above makes)", file=sys.stderr)
        return
    if not reconciliation.stale:
        print("Nothing to be done: every output's record matches the job the workflow would run for it.",
              file=sys.stderr)
        return
    forced = [job.outputs[0] for job, _ in reconciliation.stale]
    command = snakemake_command(configfiles, args.cores, *(["--forcerun", *forced] if forced else []),
                                *passed, "--", *args.targets)
    sys.exit(subprocess.run(command, env={**os.environ, RECONCILED_VARIABLE: "1"}).returncode)


if __name__ == "__main__":
    main()
