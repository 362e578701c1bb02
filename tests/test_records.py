"""The records are the truth: what reruns and what is "current" follow the provenance records that travel
with the outputs (dvc checkout, dvc pull, a copy), not Snakemake's local cache; and a local run never starts
more jobs than the memory holds. Each finding of the review, on copies of one tiny build."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from mifeatures.workflow.memory import stage_mb

from builds import (
    REPO, BIN, ENV, DVC, GIT_USER, ARTICLE_RUN, MIFEATURES, run, snakemake, set_params, init_dvc, edit, clone_of,
    copy_of, verify_all, drifted, reruns
)
from helpers import CRITICS

pytestmark = pytest.mark.slow

STRANGERS = "provenance records were not written by this checkout's runs"


def dvc_repository(root: Path) -> Path:
    """``root`` as git + DVC repository with its results committed by `dvc repro` (which has nothing to do)."""
    init_dvc(root)
    run(root, DVC, "repro")
    run(root, "git", "add", "-A")
    run(root, "git", *GIT_USER, "commit", "-q", "-m", "tiny build")
    return root


def fresh_metrics(built: Path, tmp_path: Path, change: dict, rules: list[str]) -> dict:
    """metrics.json of a clean build of the tiny config with ``change``: ``built`` is a clean build of the tiny
    config, whose jobs upstream of ``rules`` have the same params (and two clean builds are byte-identical, see
    test_two_clean_builds_are_byte_identical); ``rules`` and all after them are forced to run again by plain
    Snakemake, trusting no record."""
    root = copy_of(built, tmp_path)
    set_params(root, change)
    snakemake(root, "results/aggregate/metrics.json", "--forcerun", *rules)
    return json.loads((root / "results/aggregate/metrics.json").read_text())


def test_dvc_exp_run_after_dvc_checkout_records_a_false_experiment(built, tmp_path):
    """`dvc exp run -S aggregate.win_by=max`, then `dvc checkout` of the baseline, then the same experiment with
    `checkpoint_every: 7`: only the wins figure reran, and the experiment was stored with `win_by: max` in its
    params and "mean" in its metrics, since Snakemake's cache remembered the first experiment while the files
    were the baseline's. Three experiments with checkouts between them now each hold the metrics a clean build
    of their params makes, and a plain `snakemake` after a checkout warns that its cache may be wrong."""
    root = dvc_repository(copy_of(built, tmp_path / "repository"))
    experiments = {"win-by-max": ["aggregate.win_by=max"], "bins-20": ["score.bins=20"],
                   "win-by-max-again": ["aggregate.win_by=max", "train.checkpoint_every=7"]}
    for name, settings in experiments.items():
        run(root, DVC, "exp", "run", "-n", name, *(word for setting in settings for word in ("-S", setting)))
        run(root, "git", "checkout", "--", "params.yaml", "dvc.lock")
        run(root, DVC, "checkout")
    assert STRANGERS in snakemake(root, "-n", "all").stderr
    table = run(root, DVC, "exp", "show", "--csv", "--precision", "15", "--drop", ".*", "--keep",
                "Experiment|max_mi.*|mean_mi.*|wins.*|aggregate.win_by|score.bins").stdout
    shown = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(table)) if row["Experiment"]}
    assert shown.keys() == experiments.keys()
    assert [shown[name]["aggregate.win_by"] for name in experiments] == ["max", "mean", "max"]
    expected = {"win-by-max": fresh_metrics(built, tmp_path / "win_by", {"aggregate": {"win_by": "max"}},
                                            ["aggregate"]),
                "bins-20": fresh_metrics(built, tmp_path / "bins", {"score": {"bins": 20}}, ["score"])}
    expected["win-by-max-again"] = expected["win-by-max"]
    for name, metrics in expected.items():
        row = shown[name]
        for key in ("max_mi", "mean_mi", "wins"):
            for case, value in metrics[key].items():
                assert float(row[f"{key}.{case}"]) == pytest.approx(value, rel=1e-12), (name, key, case)


def test_make_pull_marks_another_configs_results_current(built, tmp_path):
    """Results built under `--configfile config/tiny.yaml`, pushed, cloned and pulled were "verified and marked
    up to date" for the plain params.yaml (200 images, 2 epochs), under which `snakemake -n` then had nothing
    to do. `mifeatures pull` now checks them under the config it is given: refused under params.yaml, naming
    the jobs, with `mifeatures build` planning them; accepted under config/tiny.yaml, after which Snakemake
    under that config has nothing to do."""
    origin = copy_of(built, tmp_path / "origin")
    (origin / "params.yaml").write_text((REPO / "params.yaml").read_text())  # the tiny values come from the file
    init_dvc(origin)
    run(origin, DVC, "commit", "-f")
    remote = tmp_path / "remote"
    run(origin, DVC, "remote", "add", "-d", "local", str(remote))
    run(origin, DVC, "push")
    run(origin, "git", "add", "-A")
    run(origin, "git", *GIT_USER, "commit", "-q", "-m", "built under config/tiny.yaml")
    clone = clone_of(origin, tmp_path / "machine_b")
    plain = run(clone, MIFEATURES, "pull", check=False)
    assert plain.returncode == 1, plain.stdout + plain.stderr
    assert "rerun sample" in plain.stderr and "--n-images 20 (now 200)" in plain.stderr, plain.stderr
    assert reruns(clone)["train"] == 4
    assert STRANGERS in snakemake(clone, "-n", "all").stderr
    tiny = run(clone, MIFEATURES, "pull", "--configfile", "config/tiny.yaml", check=False)
    assert tiny.returncode == 0, tiny.stdout + tiny.stderr
    dry = snakemake(clone, "-n", "all", "--configfile", "config/tiny.yaml")
    assert "Nothing to be done" in dry.stdout and STRANGERS not in dry.stderr, dry.stdout + dry.stderr
    assert reruns(clone, "--configfile", "config/tiny.yaml") == {}


def test_copy_with_its_record_passes_the_audit(built, tmp_path):
    """maps_a_image10.png with its record copied onto maps_c_image10.png, and a's score tables and image 10's maps
    with their records onto c's paths, verified "current" and Snakemake had nothing to do. A record names the
    path it was written for: both copies are caught, and `mifeatures build` reruns c's scoring, its maps of
    image 10 and what reads them."""
    root = copy_of(built, tmp_path)
    figures = root / "results/figures"
    for suffix in ("", ".prov.json"):
        shutil.copy(figures / f"maps_a_image10.png{suffix}", figures / f"maps_c_image10.png{suffix}")
        for stage, name in (("score", "mi.csv"), ("score", "summary.csv"), ("maps", "image10.npy"),
                            ("maps", "image10_bounds.csv")):
            folder = root / f"results/{stage}/{ARTICLE_RUN}"
            shutil.copy(folder / f"a/scored-faithful/{name}{suffix}", folder / f"c/scored-faithful/{name}{suffix}")
    code, verdicts = verify_all(root)
    copied = "results/figures/maps_c_image10.png"
    assert code == 1 and copied in drifted(verdicts)
    assert f"{copied}: its record was written for results/figures/maps_a_image10.png (copied from there?)" in \
        verdicts[copied]
    assert f"results/score/{ARTICLE_RUN}/c/scored-faithful/summary.csv" in drifted(verdicts)
    assert f"results/score/{ARTICLE_RUN}/a/scored-faithful/summary.csv" not in drifted(verdicts)
    planned_reruns = reruns(root)
    assert planned_reruns["score"] == 1 and planned_reruns["maps"] == 1 and planned_reruns["figure_maps"] == 2
    assert "train" not in planned_reruns


def test_output_without_a_record_provenance_txt(built, tmp_path):
    """results/provenance.txt had no record: edited to name another lr it verified current under `--all`, and
    alone it was judged by Snakemake's cache while `--all` was not. It has its record now, whose inputs are the
    figures' records, and both ways of asking give the same verdict."""
    root = copy_of(built, tmp_path)
    alone = run(root, MIFEATURES, "provenance", "--verify", "results/provenance.txt", check=False)
    assert alone.returncode == 0 and "results/provenance.txt: current" in alone.stdout, alone.stdout
    edit(root / "results/provenance.txt", "train.lr = 0.0001", "train.lr = 0.0002")
    code, verdicts = verify_all(root)
    assert code == 1 and drifted(verdicts) == {"results/provenance.txt"}
    alone = run(root, MIFEATURES, "provenance", "--verify", "results/provenance.txt", check=False)
    assert alone.returncode == 1 and "its bytes are not those its record gives" in alone.stdout
    assert reruns(root) == {"provenance": 1}


def test_environment_is_recorded_but_not_compared(built, tmp_path):
    """A figure made with matplotlib 3.10.9 verified current under another version, though rebuilding it gives
    other bytes. The versions a job's code imports are compared now: the audit names the package and both
    versions with its own verdict, and no job reruns for it (only what hashed the edited record)."""
    root = copy_of(built, tmp_path)
    record_path = root / "results/figures/wins.png.prov.json"
    record = json.loads(record_path.read_text())
    assert {"matplotlib", "pandas", "numpy"} <= record["environment"]["packages"].keys()
    record["environment"]["packages"]["matplotlib"] = "3.10.9"
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    said = run(root, MIFEATURES, "provenance", "--verify", "results/figures/wins.png", check=False)
    installed = importlib.metadata.version("matplotlib")
    assert said.returncode == 1 and "results/figures/wins.png: OTHER ENVIRONMENT" in said.stdout, said.stdout
    assert f"  - environment: matplotlib 3.10.9 when made, {installed} now" in said.stdout
    assert reruns(root) == {"provenance": 1}


# What Snakemake itself writes on a dry run or when its API plans: its log, its IO cache, its (empty) lock folder.
SNAKEMAKES_OWN = (".snakemake/log", ".snakemake/iocache", ".snakemake/locks")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file and folder of ``root`` but what Snakemake itself writes on a dry run."""
    return {str(path.relative_to(root)): (path.stat().st_mtime_ns, path.stat().st_size) for path in root.rglob("*")
            if not str(path.relative_to(root)).startswith(SNAKEMAKES_OWN) and path != root / ".snakemake"}


def test_audit_side_effects_and_crashes(built, tmp_path):
    """`--verify` and `snakemake -n` wrote a run registration (and crashed in a read-only checkout); an empty
    registration file failed every snakemake and `--verify` with JSONDecodeError; a record naming /dev/zero as
    an input hung `--verify`; a `:` in a --configfile name split the recorded list. Now the audit and dry runs
    write nothing, an unreadable registration is reported and passed over, only regular files inside the
    checkout are read, and the config files are a list."""
    root = copy_of(built, tmp_path)
    registrations = root / ".snakemake/mifeatures-runs"
    registrations.mkdir(exist_ok=True)
    (registrations / "empty.json").write_text("")
    before = snapshot(root)
    assert verify_all(root)[0] == 0
    assert "Nothing to be done" in snakemake(root, "-n", "all").stdout
    assert "Nothing to be done" in snakemake(root, "-np", "all").stdout
    assert reruns(root) == {}
    assert snapshot(root) == before
    record_path = root / "results/figures/loss.png.prov.json"
    record = json.loads(record_path.read_text())
    os.mkfifo(root / "results/pipe")
    record["inputs"] |= {"zero": {"path": "/dev/zero", "sha256": "0" * 64},
                         "pipe": {"path": "results/pipe", "sha256": "0" * 64}}
    record_path.write_text(json.dumps(record))
    said = run(root, MIFEATURES, "provenance", "--verify", "results/figures/loss.png", check=False, timeout=120)
    assert said.returncode == 1, said.stdout + said.stderr
    assert "input /dev/zero: not inside the checkout" in said.stdout
    assert "input results/pipe: not a regular file" in said.stdout
    record_path.unlink()
    (root / "over:max.yaml").write_text("aggregate: {win_by: max}\n")
    built_again = snakemake(root, "all", "--configfile", "over:max.yaml")
    assert "ignored .snakemake/mifeatures-runs/empty.json: not a readable run registration" in built_again.stderr
    wins = json.loads((root / "results/figures/wins.png.prov.json").read_text())
    assert wins["config_files"] == ["params.yaml", "over:max.yaml"]
    said = run(root, MIFEATURES, "provenance", "--verify", "results/figures/wins.png", check=False)
    assert said.returncode == 0, said.stdout + said.stderr


def test_list_changes_params_lists_every_record_after_a_clean_build(built, tmp_path):
    """`snakemake --list-changes params`, which docs/audit.md recommended, lists the last output of every job
    right after a clean build (Snakemake 9.27 lists a job's file even when its params did not change). The
    docs recommend `mifeatures build -n`: it names nothing after a clean build, and after a change of
    `aggregate.win_by` exactly the aggregate and what reads it."""
    documented = (REPO / "docs/audit.md").read_text() + (REPO / "README.md").read_text()
    assert "--list-changes params" not in documented and "mifeatures build -n" in documented
    root = copy_of(built, tmp_path)
    assert reruns(root) == {}
    set_params(root, {"aggregate": {"win_by": "max"}})
    assert reruns(root) == {"aggregate": 1, "figure_wins": 1, "provenance": 1}


def jobs_at_once(log: str) -> list[dict[str, int]]:
    """From a Snakemake log, the {jobid: mem_mb} of the jobs running after each job started."""
    running: dict[int, int] = {}
    snapshots = []
    starting = None
    for line in log.splitlines():
        if match := re.match(r"(?:local)?rule \w+:", line):
            starting = {"mem_mb": 0}
        elif starting is not None and (match := re.search(r"\bmem_mb=(\d+)", line)):
            starting["mem_mb"] = int(match[1])
        elif starting is not None and (match := re.match(r"\s+jobid: (\d+)", line)):
            starting["jobid"] = int(match[1])
        elif match := re.match(r"Finished jobid: (\d+)", line):
            running.pop(int(match[1]), None)
        elif starting is not None and line.startswith("Shell command:"):
            running[starting["jobid"]] = starting["mem_mb"]
            snapshots.append(dict(running))
            starting = None
    return snapshots


def test_default_run_started_four_trainings_at_once_and_was_killed_for_memory(built):
    """`snakemake --cores 4` (make, dvc.yaml) started all four trainings on a 2-core machine, ≈ 17 GB at once, and
    an OOM kill took the models it was replacing. Now a local run hands out at most the memory available at its
    start, and never runs jobs whose declared mem_mb (each training's measured peak, mifeatures.workflow.memory) exceed
    it: the tiny build's log (`--cores 4`, no --resources) shows both."""
    log = min((built / ".snakemake/log").glob("*.log")).read_text()
    provided = int(re.search(r"^Provided resources: .*\bmem_mb\D*(\d+)", log, re.M)[1])
    assert 0 < provided <= psutil.virtual_memory().total / 2**20
    snapshots = jobs_at_once(log)
    assert len(snapshots) > 20 and max(sum(running.values()) for running in snapshots) <= provided
    declared = {int(mem) for mem in re.findall(r"rule train:(?:\n .*)*?\bmem_mb=(\d+)", log)}
    assert declared == {stage_mb("train", case, 20, critics=CRITICS) for case in "abcd"}, declared


def test_a_job_killed_for_memory_said_nothing_of_why(built, tmp_path):
    """An OOM-killed training ended its log at `0%` and Snakemake said only `exit status 137`. A job killed by
    SIGKILL now says, in Snakemake's output and at the end of its log, that the kernel's out-of-memory killer
    most likely did it, and what to do."""
    root = copy_of(built, tmp_path)
    target = f"results/train/{ARTICLE_RUN}/a/loss.csv"
    job = subprocess.Popen([str(BIN / "snakemake"), "--cores", "1", "--forcerun", "train", "--", target], cwd=root,
                           env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    training = []
    while not training and time.monotonic() < deadline and job.poll() is None:
        training = [process for process in psutil.Process(job.pid).children(recursive=True)
                    if "mifeatures.stages.train" in process.cmdline()]
        time.sleep(0.1)
    assert training, "the training never started"
    training[0].send_signal(signal.SIGKILL)
    said = job.communicate(timeout=120)[0]
    assert job.returncode != 0
    explanation = "killed with SIGKILL (exit status 137), most likely by the kernel's out-of-memory killer"
    assert explanation in said and "--resources mem_mb=N" in said, said
    log = (root / f"results/logs/train/{ARTICLE_RUN}/a.log").read_text()
    assert log.rstrip().splitlines()[-1].startswith(f"mifeatures: this job was {explanation[:6]}"), log
    assert not (root / target).exists()
