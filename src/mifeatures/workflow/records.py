"""The records are the truth: when an output is what the workflow, run now, would make.

One rule, used by ``mifeatures build`` (what make, ``dvc repro``, ``dvc exp run`` and ``mifeatures pull`` run)
to decide what reruns, and by ``mifeatures provenance --verify`` to say "current": an output is up to date when
the record beside it

- was written for that path (not copied from another output's place), and the output still has its bytes;
- was made by the job the workflow's plan has for that path now: the same stage command, so the same case,
  protocol, seed, image, every param and every input path;
- names code that is still the checkout's (a digest per module, comments and docstrings aside);
- names inputs that still have the bytes the job read, each a regular file inside the checkout, and whose
  embedded records were written for those inputs.

Library versions are recorded and compared too (``environment_changes``), but only reported: a new matplotlib
reruns nothing by itself (see docs/audit.md).

Snakemake's metadata in ``.snakemake/`` is a local cache of this truth. The ledger below says which records
this checkout's own runs wrote or accepted, so that a plain ``snakemake`` can warn when files arrived from
elsewhere (``dvc checkout``, ``dvc pull``, a copy) and its cache may be wrong.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import platform
import shlex
import stat
import sys
from pathlib import Path
from typing import Any

from mifeatures.workflow import sources
from mifeatures.workflow.plan import PlannedJob, options
from mifeatures.workflow.provenance import LEDGER, SUFFIX, ledger_entry, sha256, sidecar

RECORDED = ("data", "results")  # the folders whose outputs have records


def read(path: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the record beside ``path``, None), or (None, why there is no usable one)."""
    record_path = sidecar(path)
    if not record_path.is_file():
        return None, f"no provenance record ({record_path})"
    try:
        record = json.loads(record_path.read_text())
        if not (isinstance(record, dict) and {"output", "command", "inputs", "code", "stage"} <= record.keys()
                and isinstance(record["output"], dict) and {"path", "sha256"} <= record["output"].keys()):
            raise ValueError("not a record: it needs its output (path, sha256), stage, command, inputs and code")
    except (OSError, ValueError) as error:
        return None, f"unreadable provenance record {record_path} ({error})"
    return record, None


def file_sha256(path: str | Path, root: Path | None = None) -> tuple[str | None, str | None]:
    """(sha256, None) of a regular file (inside ``root`` when given), or (None, why it is not hashed): a device,
    a FIFO or a file outside the checkout is never read."""
    location = Path(path)
    if root is not None and not location.resolve().is_relative_to(root.resolve()):
        return None, "not inside the checkout"
    try:
        mode = os.stat(location).st_mode
    except OSError:
        return None, "missing"
    if not stat.S_ISREG(mode):
        return None, "not a regular file"
    status = os.stat(location)
    return _sha256(str(location.resolve()), (status.st_mtime_ns, status.st_size)), None


@functools.cache
def _sha256(path: str, stamp: tuple[int, int]) -> str:
    """Hashed once per (mtime, size) in a process: `--all` meets the same arrays in the chain of every output."""
    return sha256(path)


def record_problems(path: str | Path, record: dict[str, Any], code_root: Path = sources.ROOT,
                    root: Path | None = None, check_output: bool = True) -> list[str]:
    """What no longer holds of one record, whatever the plan: its place, its output's bytes (``check_output``),
    its code, its direct inputs' bytes and the records embedded for them."""
    problems = []
    written_for = record["output"]["path"]
    if os.path.normpath(written_for) != os.path.normpath(str(path)):
        problems.append(f"{path}: its record was written for {written_for} (copied from there?)")
    if check_output:
        digest, why = file_sha256(path, root)
        if digest is None:
            problems.append(f"output {path}: {why}")
        elif digest != record["output"]["sha256"]:
            problems.append(f"output {path}: its bytes are not those its record gives (changed since it was made)")
    for module, digest in record["code"].get("modules", {}).items():
        name = sources.name(module)
        if not sources.path(name, code_root).is_file():
            problems.append(f"code {module}: ran in {record['stage']}, now missing")
        elif sources.module_digest(name, code_root) != digest:
            problems.append(f"code {module}: changed since {record['stage']} ran it")
    for entry in record["inputs"].values():
        embedded = entry.get("record")
        if embedded is not None:
            made_for, made = embedded.get("output", {}).get("path"), embedded.get("output", {}).get("sha256")
            if made_for is not None and os.path.normpath(made_for) != os.path.normpath(entry["path"]):
                problems.append(f"input {entry['path']}: the record {record['stage']} embedded for it was written "
                                f"for {made_for}")
            elif made is not None and made != entry["sha256"]:
                problems.append(f"input {entry['path']}: its bytes when {record['stage']} read them differ from "
                                f"those {embedded['stage']} wrote (edited by hand in between?)")
        digest, why = file_sha256(entry["path"], root)
        if digest is None:
            problems.append(f"input {entry['path']}: {why}")
        elif digest != entry["sha256"]:
            problems.append(f"input {entry['path']}: its bytes are not those its record gives (changed since it "
                            "was made)")
        elif sidecar(entry["path"]).exists():
            own, why = read(entry["path"])
            if own is None:
                problems.append(f"input {entry['path']}: {why}")
            elif own["output"]["sha256"] != entry["sha256"]:
                problems.append(f"input {entry['path']}: its own record {sidecar(entry['path'])} gives other bytes")
    return problems


def identity_problems(path: str, record: dict[str, Any], job: PlannedJob) -> list[str]:
    """Where the job that wrote ``record`` differs from ``job``, the one the workflow would run for ``path`` now."""
    made, now = options(shlex.split(record["command"])[1:]), options(job.command)
    differences = [f"{option or 'arguments'} {' '.join(made.get(option, ('(absent)',)))} "
                   f"(now {' '.join(now.get(option, ('(absent)',)))})"
                   for option in sorted(made.keys() | now.keys()) if made.get(option) != now.get(option)]
    if not differences:
        return []
    return [f"{path}: made by another job than the workflow's {job.rule} job for it now: " + "; ".join(differences)]


def mismatches(path: str, job: PlannedJob, root: Path) -> list[str]:
    """Why the output ``path`` is not what ``job`` would make now; empty when its record says it is. ``root``:
    the checkout (the current directory), whose ``src/`` holds the code compared with."""
    if not Path(path).exists():
        return [f"missing: the {job.rule} job makes it"]
    record, why = read(path)
    if record is None:
        return [why]
    return (identity_problems(path, record, job)
            + record_problems(path, record, root / "src" / sources.PACKAGE, root))


@functools.cache
def _version_now(package: str) -> str | None:
    """The ``__version__`` of ``package`` as this environment imports it; None if it cannot."""
    try:
        return getattr(importlib.import_module(package), "__version__", None)
    except ImportError:
        return None


def environment_changes(record: dict[str, Any], code_root: Path = sources.ROOT) -> list[str]:
    """The library versions this record's job ran with that differ from this environment's, by name: Python, and
    every recorded package the job's modules import (torch with its build)."""
    environment = record.get("environment", {})
    changes = []
    if environment.get("python") not in (None, platform.python_version()):
        changes.append(f"python {environment['python']} when made, {platform.python_version()} now")
    modules = [sources.name(module) for module in record["code"].get("modules", {})]
    imported = sources.imported_packages(*(name for name in modules if sources.path(name, code_root).is_file()),
                                         root=code_root)
    recorded = environment.get("packages", {})
    for name in sorted(imported & recorded.keys()):
        now = _version_now(name)
        if recorded[name] is not None and recorded[name] != now:
            changes.append(f"{name} {recorded[name]} when made, {now or '(not importable)'} now")
    return changes


# The ledger (provenance.LEDGER): which records this checkout's runs wrote, or `mifeatures build` accepted.

def strangers(root: str | Path = ".") -> list[str]:
    """Records under data/ and results/ of ``root`` that no run of this checkout wrote or accepted, in their
    present bytes: files that arrived from elsewhere (dvc checkout or pull, a copy). Reads only."""
    root = Path(root)
    found = []
    for folder in RECORDED:
        for record_path in sorted((root / folder).rglob(f"*{SUFFIX}")):
            relative = record_path.relative_to(root)
            entry = ledger_entry(root / LEDGER, relative)
            try:
                known = entry.read_text().strip()
            except OSError:
                known = None
            if known != hashlib.sha256(record_path.read_bytes()).hexdigest():
                found.append(str(relative))
    return found


def warn_of_strangers(root: str | Path = ".") -> None:
    """Say, on stderr, when Snakemake's view may be wrong because outputs arrived from elsewhere."""
    found = strangers(root)
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        print(f"mifeatures: {len(found)} provenance records were not written by this checkout's runs ({shown}): "
              "files moved in (dvc checkout, dvc pull, a copy?), so Snakemake's view of what is up to date may be "
              "wrong. `mifeatures build` (what make and dvc repro run) reruns exactly what their records do not "
              "match.", file=sys.stderr)
