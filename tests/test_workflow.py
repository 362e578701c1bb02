"""The whole DAG on the tiny config in temporary copies: build, no-op rerun, one-case reruns, DVC,
bad params, concurrent runs, determinism and a DVC remote round trip.

Order matters and is part of the design: most tests share the module-scoped ``project`` and run in
file order. ``test_one_case_change_reruns_only_its_branch`` and
``test_dvc_repro_reruns_only_the_changed_case`` leave their case overrides (c, then b) in its
params.yaml; ``test_dvc_repro_rejects_bad_params`` restores params.yaml; the last test on
``project``, ``test_concurrent_run_is_refused``, leaves an override of d. Determinism compares the
tables ``project`` had right after its first build (kept by the fixture) with a second, independent
build, ``second_build``, which ``pulled_clone`` then pushes to a DVC remote and pulls into a clone.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from mifeatures.params import load_params, merge

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
COPIED = ("workflow", "src", "config", "environment.yml", "dvc.yaml", ".dvcignore")
TIMEOUT = 900  # seconds; no subprocess of these tests may run longer
DVC = str(BIN / "dvc")
GIT_USER = ("-c", "user.name=mifeatures tests", "-c", "user.email=tests@example.invalid",
            "-c", "commit.gpgsign=false")
# What two clean builds of the same config must reproduce byte for byte.
DETERMINISTIC = (
    "data/sample/stl10_binary/train_X.bin", "results/grayscale/*.npy", "results/train/*/loss.csv",
    "results/train/*/encoder.pt", "results/score/*/*.csv", "results/aggregate/*.csv",
    "results/aggregate/metrics.json",
)
LOCKED = "Directory cannot be locked"  # snakemake.exceptions.LockException


def run(root: Path, *command: str, check: bool = True, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run a command of the project's environment in ``root``; fail with its output when asked."""
    result = subprocess.run(command, cwd=root, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def snakemake(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(root, str(BIN / "snakemake"), "--cores", "4", *args, check=check)


def outputs(root: Path) -> dict[str, int]:
    """mtime (ns) of every result file except logs, keyed by path relative to results/."""
    return {
        str(path.relative_to(root / "results")): path.stat().st_mtime_ns
        for path in (root / "results").rglob("*")
        if path.is_file() and "logs" not in path.parts
    }


def set_params(root: Path, change: dict) -> None:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), change), sort_keys=False))


def contents(root: Path, patterns=DETERMINISTIC) -> dict[str, bytes]:
    """Bytes of every file matching ``patterns`` (globs relative to ``root``), keyed by relative path."""
    return {str(path.relative_to(root)): path.read_bytes()
            for pattern in patterns for path in sorted(root.glob(pattern))}


def tree(root: Path, *folders: str) -> dict[str, bytes]:
    """Bytes of every file under ``folders`` of ``root``, keyed by path relative to ``root``."""
    return {str(path.relative_to(root)): path.read_bytes()
            for folder in folders for path in (root / folder).rglob("*") if path.is_file()}


def rebuilt(before: dict[str, int], after: dict[str, int]) -> set[str]:
    """Outputs written anew; a rewritten provenance sidecar (OUTPUT.prov.json) counts as its OUTPUT."""
    return {path.removesuffix(".prov.json") for path, mtime in after.items() if before.get(path) != mtime}


def branch(case: str) -> set[str]:
    """Files that must be rebuilt, and only they, when one case's training hyperparameter changes."""
    return {
        f"train/{case}/encoder.pt", f"train/{case}/loss.csv", f"score/{case}/mi.csv",
        f"score/{case}/summary.csv", "aggregate/cases.csv", "aggregate/images.csv",
        "aggregate/metrics.json", "figures/loss.png", f"figures/maps_{case}_image10.png",
        f"figures/maps_{case}_image11.png", "figures/chosen_mean_mi.png", "figures/mi_distribution.png",
        "figures/wins.png", "provenance.txt",
    }


def build_tiny(root: Path) -> Path:
    """Copy the project to ``root`` with params.yaml = params.yaml + config/tiny.yaml, and build it."""
    for name in COPIED:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    tiny = load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"])
    (root / "params.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    snakemake(root, "all")
    return root


def init_dvc(root: Path) -> None:
    """git init, dvc init and `dvc add data` in ``root`` (no analytics, Snakemake's state not in git)."""
    (root / ".gitignore").write_text("/.snakemake/\n__pycache__/\n*.egg-info/\n")
    run(root, "git", "init", "-q")
    run(root, DVC, "init", "-q")
    run(root, DVC, "config", "core.analytics", "false")
    run(root, DVC, "add", "-q", "data")


@pytest.fixture(scope="module")
def first_build(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """The tiny build behind ``project``, and its DETERMINISTIC files as they were right after it."""
    root = build_tiny(tmp_path_factory.mktemp("project"))
    return root, contents(root)


@pytest.fixture(scope="module")
def project(first_build) -> Path:
    """A copy of the project whose params.yaml is params.yaml + config/tiny.yaml, built once."""
    return first_build[0]


@pytest.fixture(scope="module")
def dvc_project(project) -> Path:
    """``project`` made a git + DVC repository, with data/ tracked by data.dvc (dvc.lock not yet written)."""
    init_dvc(project)
    return project


@pytest.fixture(scope="module")
def second_build(tmp_path_factory) -> Path:
    """A second, independent clean build of the tiny config (used for determinism and the DVC remote)."""
    return build_tiny(tmp_path_factory.mktemp("second_build"))


def test_build_writes_every_figure(project):
    """Every figure of `rule all` exists and is a complete, non-blank PNG."""
    expected = {"loss.png", "chosen_mean_mi.png", "mi_distribution.png", "wins.png"} | {
        f"maps_{case}_image{image}.png" for case in "abcd" for image in (10, 11)
    }
    figures = project / "results/figures"
    assert {path.name for path in figures.glob("*.png")} == expected
    for name in expected:
        with Image.open(figures / name) as image:
            image.verify()
        with Image.open(figures / name) as image:
            assert np.unique(np.asarray(image.convert("L"))).size > 10, name


def test_second_run_has_nothing_to_do(project):
    """A dry run right after the build schedules no job."""
    assert "Nothing to be done" in snakemake(project, "-n", "all").stdout


def test_bad_params_stop_before_any_job(project):
    """An invalid value stops snakemake with the key named, and no output is touched."""
    before = outputs(project)
    bad = project / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"lr": 0}, "score": {"bins": 1}}))
    result = snakemake(project, "all", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    assert "train.lr: 0 is less than or equal to the minimum of 0" in result.stderr + result.stdout
    assert "score.bins: 1 is less than the minimum of 2" in result.stderr + result.stdout
    assert outputs(project) == before


def test_one_case_change_reruns_only_its_branch(project):
    """Changing case c's learning rate rebuilds c's train/score, the aggregate and the figures only."""
    before = outputs(project)
    set_params(project, {"train": {"overrides": {"c": {"lr": 2.0e-4}}}})
    snakemake(project, "all")
    assert rebuilt(before, outputs(project)) == branch("c")
    assert "Nothing to be done" in snakemake(project, "-n", "all").stdout


def test_dvc_repro_reruns_only_the_changed_case(dvc_project):
    """After `dvc repro`, a one-case change is seen by `dvc status` and rebuilds only that branch."""
    project = dvc_project
    before = outputs(project)
    run(project, str(BIN / "dvc"), "repro")
    assert rebuilt(before, outputs(project)) == set()
    assert "up to date" in run(project, str(BIN / "dvc"), "repro").stdout

    set_params(project, {"train": {"overrides": {"b": {"lr": 3.0e-4}}}})
    status = run(project, str(BIN / "dvc"), "status").stdout
    assert "params.yaml" in status and "modified:" in status and "train" in status
    before = outputs(project)
    run(project, str(BIN / "dvc"), "repro")
    assert rebuilt(before, outputs(project)) == branch("b")
    assert "up to date" in run(project, str(BIN / "dvc"), "status").stdout


def test_dvc_repro_rejects_bad_params(dvc_project):
    """`dvc repro` with a bad params.yaml fails naming the keys, touches no result and records nothing."""
    project = dvc_project
    params = project / "params.yaml"
    good = params.read_text()
    lock = project / "dvc.lock"
    lock_before = lock.read_bytes() if lock.exists() else None
    status_before = run(project, DVC, "status").stdout
    before = outputs(project)
    bad = yaml.safe_load(good)
    bad["train"]["lr"] = 0
    bad["cases"] = ["a", "e"]
    params.write_text(yaml.safe_dump(bad, sort_keys=False))
    try:
        result = run(project, DVC, "repro", check=False)
    finally:
        params.write_text(good)
    said = result.stdout + result.stderr
    assert result.returncode != 0, said
    assert "train.lr: 0 is less than or equal to the minimum of 0" in said, said
    assert "cases.1: 'e' is not one of ['a', 'b', 'c', 'd']" in said, said
    assert outputs(project) == before
    assert (lock.read_bytes() if lock.exists() else None) == lock_before
    assert run(project, DVC, "status").stdout == status_before


def test_concurrent_run_is_refused(project, tmp_path):
    """A second snakemake on a directory being built is refused by the lock; the first completes intact."""
    before = outputs(project)
    set_params(project, {"train": {"overrides": {"d": {"lr": 5.0e-4}}}})
    locks = project / ".snakemake/locks"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen([str(BIN / "snakemake"), "--cores", "1", "all"], cwd=project, env=ENV,
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while not (locks.is_dir() and any(locks.iterdir())):  # the first has built its DAG and locked
                assert first.poll() is None, (tmp_path / "first.log").read_text()
                assert time.monotonic() < deadline, "the first snakemake never locked the directory"
                time.sleep(0.2)
            second = run(project, str(BIN / "snakemake"), "--cores", "1", "all", check=False)
            first_rc = first.wait(timeout=TIMEOUT)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(timeout=60)
    said = second.stdout + second.stderr
    assert second.returncode != 0, said
    assert LOCKED in said, said
    assert first_rc == 0, (tmp_path / "first.log").read_text()
    assert rebuilt(before, outputs(project)) == branch("d")
    assert not (locks.is_dir() and any(locks.iterdir()))  # snakemake removed its locks
    assert not list((project / "results").rglob("*.tmp")) and not list((project / "results").rglob("resume.pt"))
    for figure in (project / "results/figures").glob("*.png"):
        with Image.open(figure) as image:
            image.verify()
    for table in [*(project / "results").glob("*/*/*.csv"), *(project / "results").glob("aggregate/*.csv")]:
        assert len(pd.read_csv(table)) > 0, table
    json.loads((project / "results/aggregate/metrics.json").read_text())
    assert "Nothing to be done" in snakemake(project, "-n", "all").stdout


def test_two_clean_builds_are_byte_identical(first_build, second_build):
    """Two clean builds of the tiny config give byte-identical data, tables, metrics and models."""
    first = first_build[1]
    second = contents(second_build)
    assert len(first) == 1 + 3 + 4 * 2 + 4 * 2 + 2 + 1  # sample, sizes 96/88/104, 4 cases, aggregate
    assert first.keys() == second.keys()
    assert [path for path in first if first[path] != second[path]] == []


@pytest.fixture(scope="module")
def pulled_clone(second_build, tmp_path_factory) -> tuple[Path, Path]:
    """``second_build`` after `dvc repro`, `dvc push` to a local remote and a git commit; and a git clone
    of it elsewhere ("machine B") after `dvc pull`."""
    root = second_build
    remote = tmp_path_factory.mktemp("dvc_remote")
    init_dvc(root)
    run(root, DVC, "repro")
    run(root, DVC, "remote", "add", "-d", "local", str(remote))
    run(root, DVC, "push")
    run(root, "git", "add", "-A")
    run(root, "git", *GIT_USER, "commit", "-q", "-m", "tiny build")
    tracked = set(run(root, "git", "ls-files").stdout.split())
    assert {"data.dvc", "dvc.lock", "params.yaml", ".dvc/config"} <= tracked
    assert not any(path.startswith(("data/", "results/", ".snakemake/")) for path in tracked)
    clone = tmp_path_factory.mktemp("machine_b") / "clone"
    run(root.parent, "git", "clone", "-q", str(root), str(clone))
    assert not (clone / "data").exists() and not (clone / "results").exists()
    # What `make pull` does: DVC restores files in no set order, so Snakemake's mtime check would
    # see stale outputs; --touch marks the pulled, DVC-verified outputs as up to date.
    run(clone, DVC, "pull")
    snakemake(clone, "--touch", "all")
    return root, clone


def test_dvc_remote_round_trip(pulled_clone):
    """A git clone plus `dvc pull` restores data/ and results/ byte for byte, and DVC sees it up to date."""
    root, clone = pulled_clone
    original = tree(root, "data", "results")
    restored = tree(clone, "data", "results")
    assert any(path.endswith("encoder.pt") for path in original)
    assert restored.keys() == original.keys()
    assert [path for path in original if original[path] != restored[path]] == []
    status = run(clone, DVC, "status").stdout
    assert "Data and pipelines are up to date" in status, (
        f"dvc status in the clone:\n{status}\nfiles of src/ that git does not carry: "
        f"{sorted(set(tree(root, 'src')) - set(tree(clone, 'src')))}")


def test_pulled_clone_needs_no_rebuild(pulled_clone):
    """After `dvc pull` and `snakemake --touch` (`make pull`), Snakemake in the clone has nothing to do."""
    _, clone = pulled_clone
    dry = snakemake(clone, "-n", "all").stdout
    assert "Nothing to be done" in dry, dry[-3000:]


def test_dvc_experiment_is_comparable_in_exp_show(pulled_clone):
    """`dvc exp run -S train.lr=…` in the clone gives an experiment row beside the baseline in `dvc exp show`."""
    _, clone = pulled_clone
    run(clone, DVC, "exp", "run", "-S", "train.lr=0.0003")
    table = run(clone, DVC, "exp", "show", "--csv", "--drop", ".*", "--keep",
                "Experiment|rev|mean_mi.*|train.lr").stdout
    rows = list(csv.DictReader(io.StringIO(table)))
    baseline = next(row for row in rows if row["rev"] not in ("workspace",) and not row["Experiment"])
    experiment = next(row for row in rows if row["Experiment"])
    assert float(baseline["train.lr"]) == 1e-4 and float(experiment["train.lr"]) == 3e-4
    assert all(experiment[f"mean_mi.{case}"] and baseline[f"mean_mi.{case}"] for case in "abcd")
    assert any(experiment[f"mean_mi.{case}"] != baseline[f"mean_mi.{case}"] for case in "abcd")
