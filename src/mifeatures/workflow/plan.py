"""What the workflow, run now, would do: every job of the targets as Snakemake itself resolves it.

The audit compares each output's provenance record with this plan rather than keeping a second view of
"up to date": the job Snakemake would run for that path (its rule, wildcards and the exact command, with
every param and input path) and whether Snakemake would rerun it, and why (every rerun trigger: mtime,
params, input, code, software environment). The DAG is built through Snakemake's API, in the checkout,
with the checksum limit of the workflow's own profile, so that the answer is the one `snakemake` gives.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

# Set while the workflow is parsed to be planned here: the Snakefile then writes nothing (no run registration).
PLANNING_VARIABLE = "MIFEATURES_PLANNING"
# Rule arguments that are resources, not rerun triggers: they change no output (see the rules).
NOT_IDENTITY = frozenset({"--checkpoint-every", "--progress"})


@dataclass(frozen=True)
class PlannedJob:
    rule: str
    wildcards: dict[str, str]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    command: tuple[str, ...]  # the stage's argv after the interpreter, as the job would run it now
    rerun: str  # why Snakemake would run it again; empty when it is up to date
    cached: bool = True  # whether Snakemake's metadata knows every output


def _argv(shellcmd: str | None) -> tuple[str, ...]:
    """``python -m mifeatures.X ARGS > LOG 2>&1`` as the stage's argv after the interpreter."""
    if not shellcmd:
        return ()
    words = shlex.split(shellcmd)
    if ">" in words:
        words = words[: words.index(">")]
    return tuple(words[1:])


def options(argv: tuple[str, ...] | list[str]) -> dict[str, tuple[str, ...]]:
    """An argv as {option: its values}; words before the first option under "" (module, sub-command,
    positionals). Resource options (NOT_IDENTITY) are left out.

    >>> options(["-m", "mifeatures.stages.train", "--case", "a", "--checkpoint-every", "5"])
    {'': ('-m', 'mifeatures.stages.train'), '--case': ('a',)}
    """
    parsed: dict[str, list[str]] = {"": []}
    current = ""
    for word in argv:
        if word.startswith("--"):
            current = word
            parsed.setdefault(current, [])
        else:
            parsed[current].append(word)
    return {option: tuple(values) for option, values in parsed.items() if option not in NOT_IDENTITY}


@contextlib.contextmanager
def _environment(name: str, value: str):
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def _checksum_limit(checkout: Path) -> int:
    profile = yaml.safe_load((checkout / "workflow/profiles/default/config.yaml").read_text())
    return int(profile["max-checksum-file-size"])


def plan(checkout: str | os.PathLike, configfiles: list[str], targets: list[str]) -> list[PlannedJob]:
    """Every job the targets need, resolved by Snakemake in ``checkout`` with ``configfiles`` merged over
    params.yaml (which the Snakefile reads itself); nothing is run or locked."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                          ResourceSettings)

    checkout = Path(checkout).resolve()
    extra = [Path(file) for file in configfiles if Path(file) != Path("params.yaml")]
    with (contextlib.chdir(checkout), _environment(PLANNING_VARIABLE, "1"),
          SnakemakeApi(OutputSettings(quiet={Quietness.ALL}, dryrun=True, enable_file_logging=False)) as api):
        workflow_api = api.workflow(resource_settings=ResourceSettings(cores=1),
                                    config_settings=ConfigSettings(configfiles=extra),
                                    snakefile=checkout / "workflow/Snakefile", workdir=checkout)
        workflow_api.dag(dag_settings=DAGSettings(targets=set(targets),
                                                  max_checksum_file_size=_checksum_limit(checkout)))
        # The public API runs or prints a DAG; reading its jobs needs the workflow object itself.
        workflow = workflow_api._workflow
        workflow._prepare_dag(forceall=False, ignore_incomplete=False, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        dag = workflow.dag
        return [PlannedJob(job.rule.name, dict(job.wildcards), tuple(map(str, job.input)),
                           tuple(map(str, job.output)), _argv(job.shellcmd), str(dag.reason(job) or ""),
                           workflow.persistence.has_metadata(job))
                for job in dag.jobs]


def needed_by(jobs: list[PlannedJob], target: str) -> list[PlannedJob]:
    """The jobs whose outputs the target rule's job reads (every table is one of its inputs)."""
    target_job = next(job for job in jobs if job.rule == target)
    wanted = set(target_job.inputs)
    return [job for job in jobs if wanted.intersection(job.outputs)]
