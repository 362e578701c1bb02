"""The SLURM profile against a real one-node SLURM cluster (tests/slurm_cluster.sh: slurmctld, slurmd,
slurmdbd with MariaDB, munge, on loopback), through snakemake-executor-plugin-slurm's own sbatch, srun and
sacct. Skipped, saying why, where the cluster cannot run (not root, or Debian's packages cannot be had).

The profile's GPU keys are switched off by what the tests pass on the command line (the node has no GPU),
never by editing the profile.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mifeatures.workflow import provenance
from mifeatures.workflow.params import load_params

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPIED = ("workflow", "src", "config", "environment.yml", "dvc.yaml", ".dvcignore")
# The node has no GPU: no job may ask for a GPU model (the profile's train and score keys).
NO_GPU = ('train:gpu_model=""', 'score:gpu_model=""')
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "1"]
# Two cases of different sizes (so different memory requests) are what the profile's tests need of the DAG.
SLURM_CASES = ("a", "c")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The running cluster's environment (SLURM_CONF); stopped after the module."""
    folder = tmp_path_factory.mktemp("slurm")
    started = subprocess.run([str(REPO / "tests/slurm_cluster.sh"), "start", str(folder)], capture_output=True,
                             text=True, timeout=600)
    if started.returncode == 3:
        pytest.skip(f"no SLURM cluster here: {started.stderr.strip()}")
    assert started.returncode == 0, started.stdout + started.stderr
    env = {**os.environ, "SLURM_CONF": str(folder / "etc/slurm.conf"),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    yield env
    subprocess.run([str(REPO / "tests/slurm_cluster.sh"), "stop", str(folder)], timeout=120)


def tiny_project(root: Path) -> Path:
    """The project in ``root`` with params.yaml = params.yaml + config/tiny.yaml, on SLURM_CASES."""
    root.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    params = load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"]) | {"cases": list(SLURM_CASES)}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def trainable_copy(built: Path, root: Path, **changes) -> Path:
    """A copy of the SLURM-built project with ``changes`` to its params: its sample and grayscale arrays are
    current, so only the trainings the changes touch go through SLURM."""
    shutil.copytree(built, root, symlinks=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in changes.items():
        params[section] |= values
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def command(*args: str, resources: tuple[str, ...] = ()) -> list[str]:
    """Snakemake through the SLURM profile, with ``resources`` set over the profile's (one --set-resources:
    a second would replace the first)."""
    return [str(BIN / "snakemake"), "--profile", "workflow/profiles/slurm", "--set-resources", *NO_GPU, *resources,
            *FAST_STATUS, *args]


def snakemake(root: Path, env: dict, *args: str, resources: tuple[str, ...] = (), timeout: int = 1200
              ) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args, resources=resources), cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)


def sacct(env: dict, *fields: str) -> list[dict[str, str]]:
    """Every job the cluster ran (allocations only), with ``fields``. ``-S`` from the epoch: sacct's default
    window starts at today's midnight, which loses a build that ran across it."""
    out = subprocess.run(["sacct", "-a", "-X", "-n", "-P", "-S", "1970-01-01T00:00:00",
                          "-o", ",".join(("JobID", "Comment", *fields))],
                         env=env, capture_output=True, text=True, check=True).stdout
    return [dict(zip(("JobID", "Comment", *fields), line.split("|"))) for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def built(cluster, tmp_path_factory):
    root = tiny_project(tmp_path_factory.mktemp("slurm_build"))
    result = snakemake(root, cluster, "all")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, result


def test_tiny_build_through_the_slurm_profile_is_complete_and_current(built, cluster):
    """Every job ran as a SLURM job (the jobs found the library through the shell prefix's PYTHONPATH),
    every output has its record, the logs lie where the README says, and --verify calls all current."""
    root, result = built
    assert "has been submitted with SLURM jobid" in result.stdout + result.stderr
    assert "Nothing to be done" in snakemake(root, cluster, "-n", "all").stdout
    figures = sorted((root / "results/figures").glob("*.png"))
    # `all`: loss, mean MI, distribution, wins and each case's maps of the two images
    assert len(figures) == 4 + 2 * len(SLURM_CASES) and all(provenance.sidecar(f).exists() for f in figures)
    assert (root / "results/logs/train/faithful/seed78/a.log").exists()
    verified = subprocess.run([str(BIN / "mifeatures"), "provenance", "--verify", "--all"], cwd=root, env=cluster,
                              capture_output=True, text=True, timeout=600)
    assert verified.returncode == 0 and "DRIFTED" not in verified.stdout, verified.stdout[-3000:]


def test_sbatch_received_what_the_rules_declare(built, cluster):
    """What SLURM allocated each training job: the memory, time limit and CPUs the train rule declares
    (mem_mb, runtime, threads), read back from the accounting database."""
    root, _ = built
    plan = snakemake(root, cluster, "-n", "--forcerun", "train", "all").stdout
    declared = [dict(item.split("=", 1) for item in resources.split(", "))
                for resources in re.findall(r"^rule train:\n(?:    .*\n)*?    resources: (.*)$", plan, re.M)]
    assert len(declared) == len(SLURM_CASES), plan[-2000:]
    trainings = [job for job in sacct(cluster, "JobName", "ReqMem", "Timelimit", "AllocCPUS", "State")
                 if job["Comment"].startswith("rule_train")]
    assert len(trainings) == len(SLURM_CASES)
    # each case's measured peak (mifeatures.workflow.memory): c's maps are larger than a's
    assert len({job["ReqMem"] for job in trainings}) == len(SLURM_CASES)
    assert sorted(job["ReqMem"] for job in trainings) == sorted(f"{resources['mem_mb']}M" for resources in declared)
    for job, resources in zip(trainings, declared):
        assert job["State"] == "COMPLETED"
        assert job["Timelimit"] == time.strftime("%H:%M:%S", time.gmtime(int(resources["runtime"]) * 60))
        assert job["AllocCPUS"] == resources["cpus_per_task"]


def slurm_log(said: str) -> str:
    return Path(re.search(r"\(log: (\S+/rule_train/\S+\.log)\)", said).group(1)).read_text()


def test_a_training_cancelled_mid_run_resumes_to_the_same_bytes(built, cluster, tmp_path):
    """scancel a training job once it saved a resume state; the resubmitted job continues from it and
    writes the checkpoint and loss log an uninterrupted run writes, byte for byte (the same job run on this
    machine without SLURM, meanwhile: same code, same thread count)."""
    settings = {"train": {"epochs": 4, "checkpoint_every": 1}}
    target = "results/train/faithful/seed78/a"
    whole = trainable_copy(built[0], tmp_path / "whole", **settings)
    uninterrupted = subprocess.Popen([str(BIN / "snakemake"), "--cores", "1", f"{target}/encoder.pt"], cwd=whole,
                                     env=cluster, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cut = trainable_copy(built[0], tmp_path / "cut", **settings)
    running = subprocess.Popen(command(f"{target}/encoder.pt"), cwd=cut, env=cluster, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    resume = cut / target / "resume.pt"
    for _ in range(600):
        if resume.exists():
            break
        time.sleep(0.5)
    assert resume.exists(), "the training saved no resume state"
    running_jobs = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], env=cluster, capture_output=True,
                                  text=True, check=True).stdout.split("\n")
    job = next(line.split()[0] for line in running_jobs if " rule_train" in line)
    subprocess.run(["scancel", job], env=cluster, check=True)
    said = running.communicate(timeout=600)[0]
    assert running.returncode != 0 and "CANCELLED" in said, said[-2000:]
    assert resume.exists() and not (cut / target / "encoder.pt").exists()
    again = snakemake(cut, cluster, f"{target}/encoder.pt")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    log = (cut / "results/logs/train/faithful/seed78/a.log").read_text()
    assert "resuming from" in log
    said = uninterrupted.communicate(timeout=600)[0]
    assert uninterrupted.returncode == 0, said[-2000:]
    for name in ("encoder.pt", "loss.csv"):
        assert (cut / target / name).read_bytes() == (whole / target / name).read_bytes(), name


def test_a_job_past_its_memory_is_a_clear_failure(built, cluster, tmp_path):
    """A training that outgrows the memory its job asked for is killed by SLURM. Snakemake names the rule and
    the SLURM log, which names the limit; no output is left."""
    root = trainable_copy(built[0], tmp_path / "project")
    result = snakemake(root, cluster, "--forcerun", "train", "--", "results/train/faithful/seed78/a/encoder.pt",
                       resources=("train:mem_mb=50",))
    said = result.stdout + result.stderr
    assert result.returncode != 0 and "Error in rule train" in said, said[-3000:]
    assert "exceeded memory limit" in slurm_log(said) and f"> {50 * 2**20})" in slurm_log(said)
    assert not (root / "results/train/faithful/seed78/a/encoder.pt").exists()
    assert not list((root / "results/train/faithful/seed78/a").glob("*.prov.json"))


def test_a_job_past_its_runtime_is_a_clear_failure_that_keeps_its_epochs(built, cluster, tmp_path):
    """A training longer than its job's runtime (1 minute, SLURM's smallest) is ended by SLURM. Snakemake names
    the rule and SLURM's TIMEOUT, the SLURM log the time limit; the epochs done are kept in the resume state
    for the resubmission, and no checkpoint or record is left."""
    # ≈ 5 s an epoch: far past the minute
    root = trainable_copy(built[0], tmp_path / "project", train={"epochs": 100, "checkpoint_every": 1})
    target = root / "results/train/faithful/seed78/a"
    result = snakemake(root, cluster, "results/train/faithful/seed78/a/encoder.pt", resources=("train:runtime=1",),
                       timeout=600)
    said = result.stdout + result.stderr
    assert result.returncode != 0 and "Error in rule train" in said, said[-3000:]
    assert "SLURM status is: 'TIMEOUT'" in said, said[-3000:]
    assert "DUE TO TIME LIMIT" in slurm_log(said)
    assert (target / "resume.pt").is_file() and not (target / "encoder.pt").exists()
    assert not list((root / "results/train/faithful/seed78/a").glob("*.prov.json"))
