"""The GPU and SLURM profiles, dry-run on the article's config: what each job would ask the machine for."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mifeatures.core.networks.shapes import Critics
from mifeatures.workflow.memory import stage_mb

from helpers import CRITICS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("profiles")
    for name in ("workflow", "src", "config", "params.yaml", "environment.yml"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    return root


def dry_run(root: Path, profile: str, *configs: str, target: str = "all") -> dict[str, list[dict[str, str]]]:
    """{rule: [resources of each job]} that `snakemake -n TARGET` plans under ``profile`` and the
    article's config (with ``configs`` merged over it)."""
    result = subprocess.run(
        [str(BIN / "snakemake"), target, "-n", "--profile", f"workflow/profiles/{profile}", "--configfile",
         "config/article.yaml", *configs], cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout + result.stderr
    jobs: dict[str, list[dict[str, str]]] = {}
    declared = re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", result.stdout, re.M)
    for rule, resources in declared:
        jobs.setdefault(rule, []).append(dict(item.split("=", 1) for item in resources.split(", ")))
    return jobs


def test_slurm_profile_asks_for_a_gpu_memory_and_time_per_training(project):
    """Each training job asks SLURM for one GPU of the named model, memory, CPUs and a runtime from its
    steps, with the plugin's own keys."""
    jobs = dry_run(project, "slurm")
    assert len(jobs["train"]) == 4 and len(jobs["score"]) == 4
    for train in jobs["train"]:
        assert (train["gpu"], train["gpu_model"], train["cpus_per_task"]) == ("1", "h100", "4")
    # the article's 5000 images: each case's measured peak with its margin (mifeatures.workflow.memory)
    declared = sorted(stage_mb("train", case, 5000, critics=CRITICS) for case in "abcd")
    assert sorted(int(train["mem_mb"]) for train in jobs["train"]) == declared
    for train in jobs["train"]:
        assert 10 <= int(train["runtime"]) <= 120  # 25 000 steps at ≤ 50 ms, doubled
    assert all(score["gpu"] == "1" for score in jobs["score"])
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and "slurm_extra" not in str(profile)


def test_gpu_profile_lets_the_four_trainings_share_the_gpu(project):
    """Locally, jobs of a CUDA case take gpu=1 each from a budget of 4; CPU-only rules ask for none."""
    jobs = dry_run(project, "gpu")
    assert all(job["gpu"] == "1" for job in jobs["train"] + jobs["score"])
    assert "gpu" not in jobs["aggregate"][0]
    assert yaml.safe_load((REPO / "workflow/profiles/gpu/config.yaml").read_text())["resources"] == ["gpu=4"]


def test_slurm_profile_runs_the_findings_at_the_articles_scale(project):
    """config/article.yaml + config/findings.yaml: every (protocol, seed, case) trains, scores and is
    cross-checked on a GPU of its own; the findings themselves need none."""
    jobs = dry_run(project, "slurm", "config/findings.yaml", target="protocols")
    assert {rule: len(planned) for rule, planned in jobs.items() if rule in ("train", "score", "crosscheck")} == {
        "train": 24, "score": 48, "crosscheck": 24}
    assert all(job["gpu"] == "1" for job in jobs["train"] + jobs["score"] + jobs["crosscheck"])
    assert "gpu" not in jobs["findings"][0]


def test_a_cases_own_critics_reach_its_training_job_and_its_memory(project, tmp_path):
    """`train.overrides.c.global_units: 16` trains case c's critics narrower: its job's command says so and it asks
    for the memory of that narrower global critic; the other cases keep params.yaml's widths."""
    override = tmp_path / "narrow_c.yaml"
    override.write_text(yaml.safe_dump({"train": {"overrides": {"c": {"global_units": 16}}}}))
    jobs = dry_run(project, "slurm", str(override))
    narrow = Critics(CRITICS.channels, 16)
    assert sorted(int(train["mem_mb"]) for train in jobs["train"]) == sorted(
        [stage_mb("train", case, 5000, critics=CRITICS) for case in "abd"] + [stage_mb("train", "c", 5000,
                                                                                       critics=narrow)])
    planned = subprocess.run(
        [str(BIN / "snakemake"), "all", "-n", "-p", "--configfile", "config/article.yaml", str(override)],
        cwd=project, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    commands = re.findall(r"python -m mifeatures\.stages\.train --case (\w).*?--global-units (\d+)", planned.stdout)
    assert dict(commands) == {"a": "256", "b": "256", "c": "16", "d": "256"}, planned.stdout[-2000:]
