"""The whole DAG on the tiny config in a temporary copy: build, no-op rerun, one-case reruns, DVC."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mifeatures.params import load_params, merge

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
COPIED = ("workflow", "src", "config", "environment.yml", "dvc.yaml")


def run(root: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command of the project's environment in ``root``; fail with its output when asked."""
    result = subprocess.run(command, cwd=root, env=ENV, capture_output=True, text=True)
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


def rebuilt(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {path for path, mtime in after.items() if before.get(path) != mtime}


def branch(case: str) -> set[str]:
    """Files that must be rebuilt, and only they, when one case's training hyperparameter changes."""
    return {
        f"train/{case}/encoder.pt", f"train/{case}/loss.csv", f"score/{case}/mi.csv",
        f"score/{case}/summary.csv", "aggregate/cases.csv", "aggregate/images.csv",
        "aggregate/metrics.json", "figures/loss.png", f"figures/maps_{case}_image10.png",
        f"figures/maps_{case}_image11.png", "figures/chosen_mean_mi.png", "figures/mi_distribution.png",
        "figures/wins.png",
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project whose params.yaml is params.yaml + config/tiny.yaml, built once."""
    root = tmp_path_factory.mktemp("project")
    for name in COPIED:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    tiny = load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"])
    (root / "params.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    snakemake(root, "all")
    return root


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


def test_dvc_repro_reruns_only_the_changed_case(project):
    """After `dvc repro`, a one-case change is seen by `dvc status` and rebuilds only that branch."""
    run(project, "git", "init", "-q")
    run(project, str(BIN / "dvc"), "init", "-q")
    run(project, str(BIN / "dvc"), "config", "core.analytics", "false")
    run(project, str(BIN / "dvc"), "add", "-q", "data")
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
