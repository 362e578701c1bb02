"""Snakemake's folder locks after a crash: cleared when the run that held them is provably gone, kept while
any run or stage job may still be working, with real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mifeatures.workflow import runlock


@pytest.fixture
def locked(tmp_path) -> Path:
    """A working directory whose Snakemake locks a run left behind."""
    locks = tmp_path / runlock.LOCKS
    locks.mkdir(parents=True)
    for name in ("0.input.lock", "0.output.lock"):
        (locks / name).write_text("results/a.csv\n")
    return tmp_path


def register(workdir: Path, process: subprocess.Popen, **changes) -> Path:
    """An owner record for ``process``, as runlock.register writes one for a Snakemake run."""
    owner = runlock.identity(process.pid) | changes
    path = workdir / runlock.OWNERS / f"{owner['host']}-{owner['pid']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(owner))
    return path


def test_power_loss_left_a_lock_that_needed_snakemake_unlock(locked):
    """After its run is killed the locks are stale: they and the dead run's record are removed; while it
    lived they were kept."""
    run = subprocess.Popen(["sleep", "60"])
    owner = register(locked, run)
    try:
        assert runlock.clear_stale(locked) == [] and len(list((locked / runlock.LOCKS).iterdir())) == 2
    finally:
        run.kill()
        run.wait()
    assert [path.name for path in runlock.clear_stale(locked)] == ["0.input.lock", "0.output.lock"]
    assert not owner.exists() and list((locked / runlock.LOCKS).iterdir()) == []


def test_a_run_from_before_a_reboot_is_gone_and_one_on_another_host_may_live(locked):
    """A record from another boot is dead whatever its pid now names; one from another host (a shared folder)
    cannot be checked from here, so its locks are kept."""
    elsewhere = subprocess.Popen(["sleep", "60"])
    try:
        register(locked, elsewhere, host="another-host")
        assert runlock.clear_stale(locked) == []
        (locked / runlock.OWNERS / f"another-host-{elsewhere.pid}.json").unlink()
        register(locked, elsewhere, boot="an-earlier-boot")
        assert len(runlock.clear_stale(locked)) == 2
    finally:
        elsewhere.kill()
        elsewhere.wait()


def test_a_stage_job_a_killed_snakemake_left_running_keeps_the_locks(locked):
    """SIGKILL of Snakemake alone leaves its jobs running in the folder: no lock is cleared under them."""
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "mifeatures.stages.train"],
                           cwd=locked)
    try:
        assert runlock.workers(locked) == [job.pid]
        assert runlock.clear_stale(locked) == []
    finally:
        job.kill()
        job.wait()
    assert len(runlock.clear_stale(locked)) == 2


def test_registration_lasts_as_long_as_the_process(tmp_path):
    """A process that registered leaves its record while it lives and removes it when it exits."""
    code = ("import sys; from mifeatures.workflow import runlock; path = runlock.register(sys.argv[1]); "
            "print(path, flush=True); sys.stdin.read()")
    process = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    path = Path(process.stdout.readline().strip())
    assert runlock.alive(json.loads(path.read_text()))
    process.communicate("")
    assert not path.exists()
