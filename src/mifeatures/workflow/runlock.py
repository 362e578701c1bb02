"""Snakemake's folder locks after a crash: cleared when no run that could hold them is alive, never otherwise.

Snakemake locks the files a run reads and writes under ``.snakemake/locks`` and removes the locks when
it exits; after a power loss or a SIGKILL they stay, and every later run fails with ``LockException``
until ``snakemake --unlock``. The lock files do not say who made them, so each run of this workflow
registers itself (host, boot, pid and the pid's start time) while it parses the Snakefile, before it
locks anything, and a later run clears the locks only if every registered run is provably gone and no
Snakemake or stage process is working in the folder. A run on another host sharing the folder cannot
be checked from here: its registration keeps the locks.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from mifeatures.core.io import atomic_write

LOCKS = Path(".snakemake/locks")
OWNERS = Path(".snakemake/mifeatures-runs")


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])  # field 22; the name before ")" may hold spaces


def identity(pid: int) -> dict[str, Any]:
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "start": _start_time(pid)}


def alive(owner: dict[str, Any]) -> bool:
    """False only when ``owner`` is provably gone: same host, and another boot or no such process."""
    if owner.get("host") != socket.gethostname():
        return True
    return owner.get("boot") == _boot_id() and _start_time(owner["pid"]) == owner.get("start")


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _is_worker(argv: list[str]) -> bool:
    """A Snakemake run, or a stage job (`python -m mifeatures.STAGE`), by its argv.

    >>> _is_worker(["/venv/bin/python", "/venv/bin/snakemake", "--cores", "4", "all"])
    True
    >>> _is_worker(["python", "-m", "mifeatures.stages.train", "--case", "a"])
    True
    >>> _is_worker(["vim", "mifeatures/stages/train.py"])
    False
    """
    modules = [name for flag, name in zip(argv, argv[1:]) if flag == "-m"]
    return any(Path(word).name in ("snakemake", "mifeatures") for word in argv) or any(
        name.partition(".")[0] in ("mifeatures", "snakemake") for name in modules)


def workers(workdir: Path) -> list[int]:
    """Other processes working in ``workdir``: Snakemake runs and the stage jobs they started (which a
    killed Snakemake may leave running)."""
    here, ours, found = workdir.resolve(), _ancestors(), []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid in ours:
            continue
        with contextlib.suppress(OSError):
            if Path(os.readlink(entry / "cwd")) == here:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                if _is_worker(argv):
                    found.append(pid)
    return found


def _owner(path: Path) -> dict[str, Any]:
    """A registration; an unreadable one (emptied, edited) is reported and counts as a run that is gone, since
    it names no process that could be alive."""
    try:
        owner = json.loads(path.read_text())
        if isinstance(owner, dict) and isinstance(owner.get("pid"), int):
            return owner
        problem = "it names no pid"
    except (OSError, ValueError) as error:
        problem = str(error) or type(error).__name__
    print(f"ignored {path}: not a readable run registration ({problem})", file=sys.stderr)
    return {"host": socket.gethostname(), "boot": None, "pid": -1}


def clear_stale(workdir: str | os.PathLike = ".") -> list[Path]:
    """Remove the lock files of ``workdir`` if no run that could hold them is alive; return the removed ones."""
    workdir = Path(workdir)
    locks = sorted((workdir / LOCKS).glob("*.lock"))
    owners = {path: _owner(path) for path in (workdir / OWNERS).glob("*.json")}
    owners = {path: owner for path, owner in owners.items() if owner.get("pid") != os.getpid()
              or owner.get("host") != socket.gethostname()}
    gone = [path for path, owner in owners.items() if not alive(owner)]
    for path in gone:
        path.unlink(missing_ok=True)
    if not locks or len(gone) < len(owners) or workers(workdir):
        return []
    for lock in locks:
        lock.unlink(missing_ok=True)
    return locks


def register(workdir: str | os.PathLike = ".") -> Path:
    """Record this process as a run of ``workdir`` until it exits."""
    owner = identity(os.getpid())
    path = Path(workdir) / OWNERS / f"{owner['host']}-{owner['pid']}.json"
    with atomic_write(path, "w") as handle:
        json.dump(owner, handle)
    atexit.register(path.unlink, missing_ok=True)
    return path
