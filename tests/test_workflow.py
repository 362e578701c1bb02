"""The whole DAG on the tiny config in temporary copies: build, no-op rerun, exact reruns (code, bytes,
cases, URL), one-case reruns, DVC, bad params, concurrent runs, determinism and a DVC remote round trip.

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
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
import yaml
from PIL import Image

from mifeatures.workflow.memory import stage_mb
from mifeatures.core.data.sample import make_sample
from mifeatures.core.data.stl10 import write_stl10_images
from mifeatures.workflow.params import load_params, merge

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
    "data/sample/stl10_binary/train_X.bin", "results/grayscale/*.npy", "results/train/*/*/*/loss.csv",
    "results/train/*/*/*/encoder.pt", "results/score/*/*/*/*/*.csv", "results/score/*/*/*/*/*.npy",
    "results/aggregate/*.csv",
    "results/aggregate/metrics.json",
)
ARTICLE_RUN = "faithful/seed78"  # the run behind the article's figures: protocol, first seed
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
        f"train/{ARTICLE_RUN}/{case}/encoder.pt", f"train/{ARTICLE_RUN}/{case}/loss.csv",
        *(f"score/{ARTICLE_RUN}/{case}/scored-faithful/{name}"
          for name in ("mi.csv", "summary.csv", "figure_maps.npy", "figure_bounds.csv")),
        "aggregate/cases.csv", "aggregate/images.csv",
        "aggregate/metrics.json", "figures/loss.png", f"figures/maps_{case}_image10.png",
        f"figures/maps_{case}_image11.png", "figures/chosen_mean_mi.png", "figures/mi_distribution.png",
        "figures/wins.png", "provenance.txt", "article_losses.csv",
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
    """git init and dvc init in ``root`` (no analytics, Snakemake's state not in git)."""
    (root / ".gitignore").write_text("/.snakemake/\n__pycache__/\n*.egg-info/\n")
    run(root, "git", "init", "-q")
    run(root, DVC, "init", "-q")
    run(root, DVC, "config", "core.analytics", "false")


@pytest.fixture(scope="module")
def first_build(tmp_path_factory) -> tuple[Path, dict[str, bytes], Path]:
    """The tiny build behind ``project``, and its DETERMINISTIC files as they were right after it. A copy of it,
    taken then, is ``built``: the tests that edit ``project`` never reach that copy."""
    root = build_tiny(tmp_path_factory.mktemp("project"))
    pristine = shutil.copytree(root, tmp_path_factory.mktemp("built") / "tiny", symlinks=True)
    return root, contents(root), pristine


@pytest.fixture(scope="module")
def project(first_build) -> Path:
    """A copy of the project whose params.yaml is params.yaml + config/tiny.yaml, built once."""
    return first_build[0]


@pytest.fixture(scope="module")
def dvc_project(project) -> Path:
    """``project`` made a git + DVC repository (dvc.lock not yet written)."""
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


def planned(root: Path, *args: str, target: str = "all") -> dict[str, int]:
    """{rule: number of jobs} that `snakemake -n TARGET` would run now."""
    dry = snakemake(root, "-n", target, *args).stdout
    if "Nothing to be done" in dry:
        return {}
    table = dry[dry.index("Job stats:"):dry.index("Reasons:")]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if rule != "total"}


FIGURE_JOBS = {"figure_loss": 1, "figure_maps": 8, "figure_chosen": 1, "figure_distribution": 1, "figure_wins": 1}


def edit(path: Path, old: str, new: str) -> str:
    """Replace ``old`` by ``new`` in ``path``; return the original text (to restore it)."""
    original = path.read_text()
    assert old in original, f"{old!r} not in {path}"
    path.write_text(original.replace(old, new, 1))
    return original


def test_comment_in_the_code_reruns_nothing(project):
    """A comment or docstring edit in stl10.py (run by sample and grayscale) changes no behaviour."""
    module = project / "src/mifeatures/core/data/stl10.py"
    original = module.read_text()
    try:
        module.write_text(original.replace('"""The STL-10 binary layout', '"""The STL-10 binary layout (edited)', 1)
                          + "# a note\n")
        assert planned(project) == {}
    finally:
        module.write_text(original)


def test_code_change_reruns_exactly_the_jobs_that_run_that_code(project):
    """aggregation.py's WIN_STATISTICS decides the panels of mi_distribution.png: changing it reruns the
    aggregate and every figure job (the figures module imports it), and nothing upstream. The download's
    retries rerun nothing of the sample's build; the estimator, the scoring and what reads it, not training."""
    module = project / "src/mifeatures/core/statistics/aggregation.py"
    original = edit(module, 'WIN_STATISTICS = ("mean", "max")', 'WIN_STATISTICS = ("max", "mean")')
    try:
        assert planned(project) == {"aggregate": 1, **FIGURE_JOBS, "provenance": 1, "all": 1}
    finally:
        module.write_text(original)
    original = edit(project / "src/mifeatures/core/information/mi.py", "/ total, 0.0, None)", "/ total, 0, None)")
    try:  # the estimator: the scoring and what reads its tables; neither training nor the loss figure
        figures = {rule: jobs for rule, jobs in FIGURE_JOBS.items() if rule != "figure_loss"}
        assert planned(project) == {"score": 4, "aggregate": 1, **figures, "provenance": 1, "all": 1}
    finally:
        (project / "src/mifeatures/core/information/mi.py").write_text(original)
    original = edit(project / "src/mifeatures/stages/download.py", "DOWNLOAD_ATTEMPTS = 3", "DOWNLOAD_ATTEMPTS = 4")
    try:  # only the download runs it, and the sample's build has none
        assert planned(project) == {}
    finally:
        (project / "src/mifeatures/stages/download.py").write_text(original)


def test_input_rewritten_with_the_same_bytes_reruns_nothing(project):
    """A regenerated sample (5.5 MB at the default size, over Snakemake's 1 MB default checksum limit)
    with identical bytes and a new mtime reruns nothing downstream: the profile raises the limit."""
    raw = project / "data/sample/stl10_binary/train_X.bin"
    gray = project / "results/grayscale/size96.npy"
    for path in (raw, gray):
        copy = path.with_name(path.name + ".copy")
        shutil.copy(path, copy)
        os.replace(copy, path)
        os.utime(path)
    assert planned(project) == {}


def test_removing_or_adding_a_case_touches_no_other_case(project):
    """cases [a, c, d] rebuilds the combined outputs only; adding b back finds b's results still valid.
    Grayscale is one job per size, so neither retrains or rescores anything."""
    params = project / "params.yaml"
    original = params.read_text()
    try:
        set_params(project, {"cases": ["a", "c", "d"]})
        without_b = {"aggregate": 1, "figure_loss": 1, "figure_chosen": 1, "figure_distribution": 1,
                     "figure_wins": 1, "provenance": 1, "article_check": 1, "all": 1}
        assert planned(project) == without_b
        snakemake(project, "all")
        params.write_text(original)
        assert planned(project) == without_b
        snakemake(project, "all")
    finally:
        params.write_text(original)
    assert planned(project) == {}


def test_every_output_has_a_declared_provenance_record(project):
    """Records are outputs of the job that writes them, so a failed job cannot leave a stale one."""
    listed = run(project, str(BIN / "snakemake"), "--summary", "all").stdout.splitlines()[1:]
    files = {line.split("\t")[0] for line in listed if line.strip()}
    made = {file for file in files if not file.endswith(".prov.json") and file != "results/provenance.txt"}
    assert len(made) > 30 and {f"{file}.prov.json" for file in made} <= files


def stl10_project(root: Path) -> Path:
    """A copy of the project on data.dataset: stl10 whose archive (10 sample images, then black ones up to the
    split's 5000; its md5 in params.yaml) was placed in data/stl10/ by hand, so no download is needed."""
    for name in COPIED:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    images = make_sample(10, 0)
    write_stl10_images(np.concatenate([images, np.zeros((4990, *images.shape[1:]), np.uint8)]), root / "train_X.bin")
    archive = root / "data/stl10/stl10_binary.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for member in ("train_X.bin", "train_y.bin", "class_names.txt"):
            path = root / member
            if not path.exists():
                path.write_bytes(b"\1" * 5000 if member == "train_y.bin" else b"airplane\n")
            tar.add(path, f"stl10_binary/{member}")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    params = merge(load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"]),
                   {"data": {"dataset": "stl10", "stl10": {"md5": md5}}, "figures": {"images": [1]}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def test_mirror_url_with_the_same_md5_reruns_nothing(tmp_path):
    """The md5 is the dataset; the URL is where it was found. A mirror reruns nothing; another md5 does."""
    root = stl10_project(tmp_path)
    target = "results/grayscale/size96.npy"
    snakemake(root, target)
    assert "Nothing to be done" in snakemake(root, "-n", target).stdout
    set_params(root, {"data": {"stl10": {"url": "https://mirror.example.invalid/stl10_binary.tar.gz"}}})
    assert "Nothing to be done" in snakemake(root, "-n", target).stdout
    set_params(root, {"data": {"stl10": {"md5": "0" * 32}}})
    dry = snakemake(root, "-n", target).stdout
    assert re.search(r"^download\s+1$", dry, re.M) and re.search(r"^grayscale\s+1$", dry, re.M), dry


def test_bad_params_stop_before_any_job(project):
    """An invalid value stops snakemake with the key named, and no output is touched."""
    before = outputs(project)
    bad = project / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"lr": 0}, "score": {"bins": 1}}))
    result = snakemake(project, "all", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    assert "train.lr: 0 is less than or equal to the minimum of 0" in result.stderr + result.stdout
    assert "score.bins: 1 is less than the minimum of 2" in result.stderr + result.stdout
    late = project / "late.yaml"  # valid keys that could only fail in a job, after all training
    late.write_text(yaml.safe_dump({"figures": {"images": [10, 300]}, "cases": ["a", "c"],
                                    "train": {"overrides": {"b": {"lr": 1e-3}}}}))
    said = snakemake(project, "all", "--configfile", str(late), check=False)
    assert said.returncode != 0
    assert "figures.images: image 300 does not exist: data.sample.n_images has 20 images" in said.stderr + said.stdout
    assert "train.overrides.b: case 'b' is not in cases ['a', 'c']" in said.stderr + said.stdout
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
    # sample, sizes 96/88/104, 4 cases trained (2 files) and scored (4: tables, figure maps and bounds), aggregate
    assert len(first) == 1 + 3 + 4 * 2 + 4 * 4 + 2 + 1
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
    assert {"dvc.lock", "params.yaml", ".dvc/config"} <= tracked
    assert not any(path.startswith(("data/", "results/", ".snakemake/")) for path in tracked)
    assert "Data and pipelines are up to date" in run(root, DVC, "status").stdout
    clone = clone_of(root, tmp_path_factory.mktemp("machine_b"))
    run(clone, str(BIN / "mifeatures"), "pull")  # what `make pull` runs
    return root, clone


def clone_of(root: Path, parent: Path) -> Path:
    clone = parent / "clone"
    run(root.parent, "git", "clone", "-q", str(root), str(clone))
    assert not (clone / "data").exists() and not (clone / "results").exists()
    return clone


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


def test_pull_refuses_results_built_with_other_params(pulled_clone, tmp_path):
    """Results pulled into a checkout whose params differ are not marked up to date: `mifeatures pull`
    (`make pull`) says why and exits 1, and Snakemake still sees the work to do."""
    root, _ = pulled_clone
    clone = clone_of(root, tmp_path)
    set_params(clone, {"train": {"lr": 2.0e-4}})
    said = run(clone, str(BIN / "mifeatures"), "pull", check=False)
    assert said.returncode == 1
    assert "were not built from this checkout's code and params; nothing was marked up to date" in said.stderr
    assert planned(clone)["train"] == 4


def test_after_make_pull_changes_stop_rerunning(pulled_clone):
    """After `make pull`, `snakemake -n` reported "Rules with missing metadata: sample", and changing the
    sample's seed or size reran nothing. Every job now has metadata, so such a change reruns everything."""
    _, clone = pulled_clone
    dry = snakemake(clone, "-n", "all").stdout
    assert "Nothing to be done" in dry and "missing metadata" not in dry, dry
    params = clone / "params.yaml"
    original = params.read_text()
    try:
        for change in ({"data": {"sample": {"seed": 79}}}, {"data": {"sample": {"n_images": 30}}}):
            set_params(clone, change)
            assert planned(clone) == {"sample": 1, "grayscale": 3, "train": 4, "score": 4, "aggregate": 1,
                                      **FIGURE_JOBS, "provenance": 1, "article_check": 1, "all": 1}
            params.write_text(original)
    finally:
        params.write_text(original)


def test_comment_only_change_in_src_makes_pull_refuse(pulled_clone, tmp_path):
    """A comment in src/ changed DVC's hash of src, so `make pull` refused and the advised `make` retrained
    everything. Code digests ignore comments, and so does the pull now."""
    root, _ = pulled_clone
    clone = clone_of(root, tmp_path)
    with (clone / "src/mifeatures/stages/sample.py").open("a") as module:
        module.write("# a comment changes no job\n")
    said = run(clone, str(BIN / "mifeatures"), "pull", check=False)
    assert said.returncode == 0, said.stdout + said.stderr
    assert planned(clone) == {}


def test_pull_over_local_edits_dumps_a_traceback(pulled_clone, tmp_path):
    """`mifeatures pull` over a locally edited result printed a raw traceback; it prints DVC's message, what
    to do, and exits 1, having marked nothing up to date."""
    root, _ = pulled_clone
    clone = clone_of(root, tmp_path)
    run(clone, DVC, "pull")
    metrics = clone / "results/aggregate/metrics.json"
    metrics.write_text(metrics.read_text().replace("mean", "mean ", 1))
    said = run(clone, str(BIN / "mifeatures"), "pull", check=False)
    assert said.returncode == 1 and "Traceback" not in said.stdout + said.stderr, said.stdout + said.stderr
    assert "dvc pull failed" in said.stderr and "unsaved files" in said.stderr, said.stderr  # DVC's own words
    assert "nothing was marked up to date" in said.stderr, said.stderr


def test_dvc_experiment_is_comparable_in_exp_show(pulled_clone):
    """`dvc exp run -S train.lr=1e-5` in the clone (DVC writes `lr: 1e-05`, a string to YAML 1.1) gives an
    experiment row beside the baseline in `dvc exp show`."""
    _, clone = pulled_clone
    run(clone, DVC, "exp", "run", "-S", "train.lr=1e-5")
    table = run(clone, DVC, "exp", "show", "--csv", "--drop", ".*", "--keep",
                "Experiment|rev|mean_mi.*|train.lr").stdout
    rows = list(csv.DictReader(io.StringIO(table)))
    baseline = next(row for row in rows if row["rev"] not in ("workspace",) and not row["Experiment"])
    experiment = next(row for row in rows if row["Experiment"])
    assert float(baseline["train.lr"]) == 1e-4 and float(experiment["train.lr"]) == 1e-5
    assert all(experiment[f"mean_mi.{case}"] and baseline[f"mean_mi.{case}"] for case in "abcd")
    assert any(experiment[f"mean_mi.{case}"] != baseline[f"mean_mi.{case}"] for case in "abcd")


def test_protocols_and_seeds_are_wildcards_of_the_same_rules(protocols_build, tmp_path):
    """`snakemake protocols` runs the corrected protocol beside the article's run, whose outputs it
    leaves byte for byte; the findings read the same faithful numbers as the aggregate; a param of the
    corrected scoring reruns corrected jobs only; a second seed trains every (protocol, case) once more
    and leaves the article's figures current (on a copy of the shared two-case build of `all`, then
    `protocols`)."""
    project = shutil.copytree(protocols_build[0], tmp_path / "tiny", symlinks=True)
    article_outputs = protocols_build[1]
    cases = yaml.safe_load((project / "params.yaml").read_text())["cases"]
    after = {path: (project / path).read_bytes() for path in article_outputs}
    assert after == article_outputs and planned(project) == {}
    findings = pd.read_csv(project / "results/findings/cases.csv")
    faithful = findings[(findings["training"] == "faithful") & (findings["scoring"] == "faithful")]
    faithful = faithful.set_index("case")["mean_mi"]
    aggregate = pd.read_csv(project / "results/aggregate/cases.csv").set_index("case")["mean_mi"]
    pd.testing.assert_series_equal(faithful, aggregate, check_names=False, rtol=1e-12)
    assert set(zip(findings["training"], findings["scoring"])) == {
        (training, scoring) for training in ("faithful", "corrected") for scoring in ("faithful", "corrected")}
    findings_text = (project / "results/findings.md").read_text()
    assert "**One seed**: seed-level intervals and tests need at least 2 seeds" in findings_text
    corrected_scoring = {"score": 2 * len(cases), "findings": 1, "figure_protocols": 1, "protocols": 1}
    null = project / "src/mifeatures/core/information/estimators.py"
    original_null = edit(null, "return mutual_information_many(rolled, [maps] * len(rolled), bins).mean(axis=0)",
                         "return mutual_information_many(rolled, [maps] * len(rolled), bins).mean(0)")
    # the spatial null: the corrected scorer's jobs (of both trainings) and what reads them, nothing of the faithful one
    assert planned(project, target="protocols") == corrected_scoring
    assert planned(project) == {}
    null.write_text(original_null)
    set_params(project, {"score": {"null_shifts": 4}})
    assert planned(project, target="protocols") == corrected_scoring
    set_params(project, {"train": {"seeds": [78, 79]}})
    # seed 79: both trainings and both scorers of each case; seed 78: the corrected scorer again (null_shifts)
    assert planned(project, target="protocols") == {
        "train": 2 * len(cases), "score": 6 * len(cases), "crosscheck": 2 * len(cases), "findings": 1,
        "figure_protocols": 1, "protocols": 1}
    assert planned(project) == {}


# Every "current" and every "valid" is true: each finding of the review, on a copy of one tiny build.

@pytest.fixture(scope="module")
def built(first_build) -> Path:
    """A tiny build nobody edits (taken right after ``first_build``, mtimes and metadata kept); each test below
    attacks a copy of it."""
    return first_build[2]


def copy_of(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)
    return copy


def verify_all(root: Path, *args: str) -> tuple[int, dict[str, list[str]]]:
    """`mifeatures provenance --all --verify` in ``root``: (exit code, {output: its problems})."""
    said = run(root, str(BIN / "mifeatures"), "provenance", "--all", "--verify", *args, check=False)
    verdicts: dict[str, list[str]] = {}
    path = None  # the output whose problems the indented lines below it list
    for line in said.stdout.splitlines():
        if line.startswith("  - "):
            verdicts[path].append(line[4:])
        elif ": " in line and not line.startswith("("):
            path = line.split(": ")[0]
            verdicts[path] = []
    assert said.returncode in (0, 1), said.stdout + said.stderr
    return said.returncode, verdicts


def drifted(verdicts: dict[str, list[str]]) -> set[str]:
    return {path for path, problems in verdicts.items() if problems}


def test_fresh_build_verifies_current_and_every_declared_output_is_checked(built):
    """Right after a build every output under data/ and results/ that `all` declares is checked and current."""
    code, verdicts = verify_all(built)
    assert code == 0 and drifted(verdicts) == set()
    declared = {line.split("\t")[0] for line in run(built, str(BIN / "snakemake"), "--summary", "all").stdout
                .splitlines()[1:] if line.strip() and not line.split("\t")[0].endswith(".prov.json")}
    assert set(verdicts) == declared and "results/aggregate/metrics.json" in declared
    shown = sorted((built / "results/logs/progress").rglob("*.txt"))  # each training job's progress file
    assert len(shown) == 4 and all(": 100%" in path.read_text() for path in shown)


@pytest.mark.parametrize("override", [{"train": {"epochs": 1.0}}, {"train": {"batch_size": 30}},
                                      {"train": {"seeds": [78.0]}}, {"score": {"bins": 100000}}])
def test_value_the_validator_calls_valid_deletes_trained_models(built, tmp_path, override):
    """`epochs: 1.0`, `batch_size: 30` on 20 images (under --keep-going), `seeds: [78.0]` and `bins: 100000`
    were "valid" and failed a job after Snakemake had deleted its outputs: now refused before any job, by
    `mifeatures params` and Snakemake alike, and nothing is touched."""
    root = copy_of(built, tmp_path)
    before = outputs(root)
    (root / "bad.yaml").write_text(yaml.safe_dump(override))
    said = snakemake(root, "all", "--keep-going", "--configfile", "bad.yaml", check=False)
    checked = run(root, str(BIN / "mifeatures"), "params", "params.yaml", "bad.yaml", check=False)
    assert said.returncode != 0 and checked.returncode == 1
    key = ".".join([*override, *override[next(iter(override))]])
    assert key in said.stdout + said.stderr and key in checked.stderr, said.stdout + said.stderr
    assert outputs(root) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so device: cuda is valid here")
def test_device_cuda_on_a_machine_without_one_deletes_the_models(built, tmp_path):
    """`device: cuda` where there is no CUDA failed every train job after its outputs were removed: now the
    run stops before any job, naming the key and the cases."""
    root = copy_of(built, tmp_path)
    before = outputs(root)
    set_params(root, {"train": {"overrides": {"c": {"device": "cuda"}}}})
    said = snakemake(root, "all", check=False)
    assert said.returncode != 0
    assert "train.device: 'cuda' for case(s) c, but this machine has no CUDA device" in said.stdout + said.stderr
    assert outputs(root) == before


@pytest.mark.parametrize(("text", "message"), [
    ("train:\n  epochs: 1\n  epochs: 2\n", "line 3: key 'epochs' given twice"),
    ("data:\n  sample:\n    seed: 010\n", "line 3: seed: '010' has a leading zero"),
])
def test_duplicate_key_and_yaml_1_1_octal_seed_run_with_another_value(built, tmp_path, text, message):
    """A duplicate `epochs:` (Snakemake took the last, DVC refused the file) and `seed: 010` (8 to Snakemake,
    10 to DVC) stop Snakemake before any job, as DVC would."""
    root = copy_of(built, tmp_path)
    (root / "over.yaml").write_text(text)
    said = snakemake(root, "-n", "all", "--configfile", "over.yaml", check=False)
    assert said.returncode != 0 and message in said.stdout + said.stderr, said.stdout + said.stderr


def hand_train(root: Path, case: str, *changes: str) -> None:
    """Run the train stage by hand as the review did, writing into the article run's folder for ``case``."""
    folder = f"results/train/{ARTICLE_RUN}/{case}"
    run(root, sys.executable, "-m", "mifeatures.stages.train", "--case", case, "--encoder-images",
        "results/grayscale/size96.npy", "--critic-images", "results/grayscale/size88.npy", "--epochs", "1",
        "--batch-size", "10", "--lr", "0.0001", "--seed", "78", "--alpha", "0.1", "--beta", "0.1", "--gamma", "0.8",
        "--device", "cpu", "--precision", "fp32", "--no-fused-adam", "--checkpoint-every", "5",
        "--encoder-out", f"{folder}/encoder.pt", "--loss-out", f"{folder}/loss.csv", *changes)


def test_stage_run_by_hand_with_other_arguments_verifies_current(built, tmp_path):
    """A training run by hand under the corrected protocol, put at the faithful run's path, then the figures
    rebuilt on it by Snakemake: `--verify` said 12 × current. Now the score job refuses to score that checkpoint
    as the faithful run (a plain `snakemake all` fails there, naming both), the encoder names the protocol it was
    made with and the one the workflow would use, and `mifeatures build` would retrain it."""
    root = copy_of(built, tmp_path)
    hand_train(root, "a", "--protocol", "corrected")
    said = snakemake(root, "all", check=False)
    assert said.returncode != 0
    assert "(adversarial prior True, seed 78), not of case a (adversarial prior False, seed 78)" in (
        said.stdout + said.stderr)
    code, verdicts = verify_all(root)
    assert code == 1
    encoder = f"results/train/{ARTICLE_RUN}/a/encoder.pt"
    assert any("--protocol corrected (now faithful)" in problem for problem in verdicts[encoder])
    assert "results/figures/maps_c_image10.png" not in drifted(verdicts)
    assert reruns(root)["train"] == 1


def test_maps_of_image_11_written_to_maps_c_image10_verifies_current(built, tmp_path):
    """The maps figure of image 11 written to `maps_c_image10.png` is not what that path's job makes."""
    root = copy_of(built, tmp_path)
    record = json.loads((root / "results/figures/maps_c_image10.png.prov.json").read_text())
    command = shlex.split(record["command"])
    command[command.index("--image") + 1] = "11"
    run(root, sys.executable, *command[1:])
    said = run(root, str(BIN / "mifeatures"), "provenance", "--verify", "results/figures/maps_c_image10.png",
               check=False)
    assert said.returncode == 1 and "--image 11 (now 10)" in said.stdout, said.stdout


@pytest.mark.parametrize("change", [{"data": {"dataset": "stl10"}}, {"train": {"seeds": [79, 78]}},
                                    {"cases": ["a", "c"]}], ids=["dataset", "seeds", "cases"])
def test_settings_that_choose_the_inputs_are_in_no_record(built, tmp_path, change):
    """With `data.dataset: stl10`, `seeds: [79, 78]` or `cases: [a, c]`, `--verify` said current while
    `snakemake -n` planned 24–28 jobs. Now every output Snakemake would rebuild is not current, and the
    outputs it would not rebuild are current: the two views agree."""
    root = copy_of(built, tmp_path)
    set_params(root, change)
    code, verdicts = verify_all(root)
    dry = snakemake(root, "-n", "all").stdout
    would_build = set(re.findall(r"^    output: (.*)$", dry, re.M))
    would_build = {path for line in would_build for path in line.split(", ") if not path.endswith(".prov.json")}
    assert code == 1 and would_build and would_build == drifted(verdicts), (would_build ^ drifted(verdicts))


def test_copied_checkout_is_verified_against_the_originals_config(built, tmp_path):
    """Records held each --configfile's absolute path: a copy was verified against the original's file, and
    failed with exit 2 once it was gone. They hold paths relative to the checkout now."""
    original = copy_of(built, tmp_path / "original")
    (original / "over.yaml").write_text("aggregate: {win_by: max}\n")
    snakemake(original, "all", "--configfile", "over.yaml")
    copy = copy_of(original, tmp_path / "second")
    (copy / "over.yaml").write_text("aggregate: {win_by: mean}\n")
    shutil.rmtree(original)
    code, verdicts = verify_all(copy)
    assert code == 1 and "results/figures/wins.png" in drifted(verdicts)
    assert "param aggregate.win_by: 'max' when made, 'mean' now" in verdicts["results/figures/wins.png"]
    record = json.loads((copy / "results/figures/wins.png.prov.json").read_text())
    assert record["config_files"] == ["params.yaml", "over.yaml"]


def test_all_checks_only_the_figures(built, tmp_path):
    """`--all` checked results/figures/*.png only: an edited metrics.json or article_losses.csv, or a figure
    whose record was deleted and whose PNG was corrupted, passed. Each is now a failure."""
    root = copy_of(built, tmp_path)
    metrics = root / "results/aggregate/metrics.json"
    values = json.loads(metrics.read_text())
    values["mean_mi"]["c"] = 0.99
    metrics.write_text(json.dumps(values))
    with (root / "results/article_losses.csv").open("a") as table:
        table.write("99,a,0.5,0.5\n")
    (root / "results/figures/wins.png.prov.json").unlink()
    (root / "results/figures/wins.png").write_bytes(b"not a png")
    code, verdicts = verify_all(root)
    assert code == 1
    assert drifted(verdicts) >= {"results/aggregate/metrics.json", "results/article_losses.csv",
                                 "results/figures/wins.png"}
    assert verdicts["results/figures/wins.png"][0].startswith("no provenance record")


def test_venv_of_one_checkout_verifies_another_with_its_own_code(built, tmp_path):
    """The CLI digested the code of the installed package, so a venv made in one checkout verified another
    with the first one's code. In a copy whose aggregation.py differs, the venv of this repository now sees
    the copy's code: the aggregate and the figures drawn from it are not current, the rest is."""
    root = copy_of(built, tmp_path)
    edit(root / "src/mifeatures/core/statistics/aggregation.py", 'WIN_STATISTICS = ("mean", "max")',
         'WIN_STATISTICS = ("max", "mean")')
    code, verdicts = verify_all(root)
    changed = {path for path, problems in verdicts.items()
               if "code mifeatures/core/statistics/aggregation.py: changed since aggregate ran it" in problems}
    assert code == 1 and "results/aggregate/metrics.json" in changed and "results/figures/wins.png" in changed
    assert f"results/train/{ARTICLE_RUN}/c/encoder.pt" not in drifted(verdicts)


def test_verify_all_from_another_directory_says_name_figures(built, tmp_path):
    """From outside a checkout `--all --verify` said "name figures or use --all"; it names the problem now."""
    said = run(tmp_path, str(BIN / "mifeatures"), "provenance", "--all", "--verify", check=False)
    assert said.returncode == 2 and "is not a mifeatures checkout (it has no workflow/Snakefile)" in said.stderr
    from_elsewhere = run(tmp_path, str(BIN / "mifeatures"), "provenance", "--all", "--verify", "--directory",
                         str(built), check=False)
    assert from_elsewhere.returncode == 0, from_elsewhere.stdout + from_elsewhere.stderr


@pytest.mark.parametrize("deleted", [f"results/score/{ARTICLE_RUN}/c/scored-faithful/summary.csv",
                                     f"results/train/{ARTICLE_RUN}/c/encoder.pt"])
def test_missing_intermediates_are_never_rebuilt(built, tmp_path, deleted):
    """A deleted table or checkpoint: `snakemake all` said "Nothing to be done" while `--verify` said DRIFTED.
    Both now agree that it is missing, and `snakemake all` rebuilds it and what depends on it."""
    root = copy_of(built, tmp_path)
    (root / deleted).unlink()
    code, verdicts = verify_all(root)
    assert code == 1 and verdicts[deleted][0].startswith("missing")
    assert planned(root)
    snakemake(root, "all")
    assert verify_all(root)[0] == 0 and planned(root) == {}


def test_swapping_two_lines_or_restating_a_value_retrains_all_four(built, tmp_path):
    """Params are compared as values: swapping the batch_size and lr lines, or restating `lr: 1E-4` in an
    override file and per case, retrained every case before."""
    root = copy_of(built, tmp_path)
    params = root / "params.yaml"
    lines = params.read_text().splitlines()
    batch, lr = (next(i for i, line in enumerate(lines) if line.strip().startswith(key))
                 for key in ("batch_size:", "lr:"))
    lines[batch], lines[lr] = lines[lr], lines[batch]
    params.write_text("\n".join(lines) + "\n")
    assert planned(root) == {}
    (root / "over.yaml").write_text("train:\n  lr: 1E-4\n  overrides: {c: {lr: 1.0e-4}}\n")
    assert planned(root, "--configfile", "over.yaml") == {}
    assert verify_all(root, "--params", "params.yaml", "over.yaml")[0] == 0


def test_power_loss_needs_snakemake_unlock(built, tmp_path):
    """Snakemake and its jobs killed mid-run (as by a power loss) left locks that failed every rerun with
    LockException until `snakemake --unlock`; the same command now resumes and finishes."""
    root = copy_of(built, tmp_path)
    set_params(root, {"train": {"overrides": {"d": {"lr": 5.0e-4}}}})
    shutil.rmtree(root / "results/logs")  # so that d's training log appearing means it is training
    command = [str(BIN / "snakemake"), "--cores", "1", "all"]
    with (tmp_path / "killed.log").open("w") as log:
        killed = subprocess.Popen(command, cwd=root, env=ENV, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        deadline = time.monotonic() + 120
        while not list((root / "results/logs/train").rglob("d.log")):
            assert killed.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()
            time.sleep(0.1)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
    assert list((root / ".snakemake/locks").iterdir())
    rerun = snakemake(root, "all")
    assert "the run that held it is gone" in rerun.stderr
    assert planned(root) == {} and verify_all(root)[0] == 0


def test_two_runs_with_disjoint_targets_both_run(built, tmp_path):
    """Snakemake locks files, not the folder, so two runs whose jobs share no output both run. That is safe
    here: each job writes only its own outputs (atomically) and its own records and metadata, a stage never
    writes outside its declared outputs, and a run that shares a file with a live one is refused."""
    root = copy_of(built, tmp_path)
    for figure in ("wins.png", "loss.png"):
        for path in (root / "results/figures").glob(f"{figure}*"):
            path.unlink()
    runs = [subprocess.Popen([str(BIN / "snakemake"), "--cores", "1", f"results/figures/{figure}"], cwd=root,
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for figure in ("wins.png", "loss.png")]
    said = [process.communicate(timeout=TIMEOUT)[0] for process in runs]
    assert [process.returncode for process in runs] == [0, 0], said
    assert drifted(verify_all(root)[1]) == {"results/provenance.txt"}  # it summarises the two new records
    snakemake(root, "all")
    assert verify_all(root)[0] == 0 and planned(root) == {}


def test_dvc_plots_name_one_seed_and_four_cases(built, tmp_path):
    """dvc.yaml's plots named results/train/faithful/seed78/{a..d}/loss.csv, so other seeds or cases broke
    `dvc plots show`. Its plots are the figures now: after `seeds: [79]` and `cases: [a, c]` and a build,
    `dvc plots show` renders every one of them, the MI distribution and the wins included."""
    root = copy_of(built, tmp_path)
    init_dvc(root)
    set_params(root, {"train": {"seeds": [79]}, "cases": ["a", "c"]})
    snakemake(root, "all")
    said = run(root, DVC, "plots", "show", "--json")
    shown = json.loads(said.stdout)["data"]
    assert {"results/figures/loss.png", "results/figures/mi_distribution.png", "results/figures/wins.png"} <= set(
        shown), said.stdout[:2000]
    for plot in shown.values():
        with Image.open(plot[0]["url"]) as image:
            image.verify()
    assert "seed78" not in (root / "dvc.yaml").read_text()


# The records are the truth: what reruns and what is "current" follow the records that travel with the
# outputs, not Snakemake's local cache. Each finding of the review, on copies of the same tiny build.

MIFEATURES = str(BIN / "mifeatures")
STRANGERS = "provenance records were not written by this checkout's runs"


def reruns(root: Path, *args: str) -> dict[str, int]:
    """{rule: jobs} that `mifeatures build -n` would rerun: those whose records do not match, and their readers."""
    said = run(root, MIFEATURES, "build", "-n", *args)
    return dict(Counter(re.findall(r"^  rerun (\w+)", said.stderr, re.M)))


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
    """maps_a_image10.png with its record copied onto maps_c_image10.png, and a's four score tables with their
    records onto c's paths, verified "current" and Snakemake had nothing to do. A record names the path it was
    written for: both copies are caught, and `mifeatures build` reruns c's scoring and what reads it."""
    root = copy_of(built, tmp_path)
    figures = root / "results/figures"
    score = root / f"results/score/{ARTICLE_RUN}"
    for suffix in ("", ".prov.json"):
        shutil.copy(figures / f"maps_a_image10.png{suffix}", figures / f"maps_c_image10.png{suffix}")
        for name in ("mi.csv", "summary.csv", "figure_maps.npy", "figure_bounds.csv"):
            shutil.copy(score / f"a/scored-faithful/{name}{suffix}", score / f"c/scored-faithful/{name}{suffix}")
    code, verdicts = verify_all(root)
    copied = "results/figures/maps_c_image10.png"
    assert code == 1 and copied in drifted(verdicts)
    assert f"{copied}: its record was written for results/figures/maps_a_image10.png (copied from there?)" in \
        verdicts[copied]
    assert f"results/score/{ARTICLE_RUN}/c/scored-faithful/summary.csv" in drifted(verdicts)
    assert f"results/score/{ARTICLE_RUN}/a/scored-faithful/summary.csv" not in drifted(verdicts)
    planned_reruns = reruns(root)
    assert planned_reruns["score"] == 1 and planned_reruns["figure_maps"] == 2 and "train" not in planned_reruns


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
    assert declared == {stage_mb("train", case, 20) for case in "abcd"}, declared


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
