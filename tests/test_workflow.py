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
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from mifeatures.core.data.sample import make_sample
from mifeatures.core.data.stl10 import write_stl10_images
from mifeatures.workflow.params import load_params, merge

from builds import (
    REPO, BIN, ENV, COPIED, TIMEOUT, DVC, GIT_USER, ARTICLE_RUN, MIFEATURES, run, snakemake, outputs, set_params,
    init_dvc, planned, edit, clone_of, copy_of, build_tiny
)

pytestmark = pytest.mark.slow

# What two clean builds of the same config must reproduce byte for byte.
DETERMINISTIC = (
    "data/sample/stl10_binary/train_X.bin", "results/grayscale/*.npy", "results/train/*/*/*/loss.csv",
    "results/train/*/*/*/encoder.pt", "results/score/*/*/*/*/*.csv", "results/maps/*/*/*/*/*.npy",
    "results/maps/*/*/*/*/*.csv",
    "results/aggregate/*.csv",
    "results/aggregate/metrics.json",
)


LOCKED = "Directory cannot be locked"  # snakemake.exceptions.LockException


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
        *(f"score/{ARTICLE_RUN}/{case}/scored-faithful/{name}" for name in ("mi.csv", "summary.csv")),
        *(f"maps/{ARTICLE_RUN}/{case}/scored-faithful/image{image}{name}"
          for image in (10, 11) for name in (".npy", "_bounds.csv")),
        "aggregate/cases.csv", "aggregate/cases.html", "aggregate/images.csv",
        "aggregate/metrics.json", "figures/loss.png", "figures/loss.csv", f"figures/maps_{case}_image10.png",
        f"figures/maps_{case}_image11.png", "figures/chosen_mean_mi.png", "figures/mi_distribution.png",
        "figures/wins.png", "provenance.txt", "article_losses.csv", "article_losses.html",
    }


@pytest.fixture(scope="module")
def first_build(tiny_build, tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A copy of the run's tiny build (conftest), behind ``project``, and its DETERMINISTIC files as they were
    right after it."""
    root = shutil.copytree(tiny_build, tmp_path_factory.mktemp("project") / "tiny", symlinks=True)
    return root, contents(root)


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


def documented(command: str, row: str) -> dict[str, str]:
    """The real output docs/dvc.md shows for ``command``: {column: value} of its table row that starts with ``row``."""
    output = (REPO / "docs/dvc.md").read_text().split(f"$ {command}\n", 1)[1].split("\n$ ", 1)[0]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    values = next(line for line in lines[1:] if line.startswith(row)).removeprefix(row).split()
    return dict(zip(lines[0].split()[-len(values):], values))


def as_dvc_prints(metrics: dict) -> dict[str, str]:
    """metrics.json's values keyed and formatted as DVC's tables print them (5 significant digits)."""
    flat = {f"{key}.{case}": value for key, values in metrics.items() if isinstance(values, dict)
            for case, value in values.items()}
    return {key: f"{value:.5g}" if isinstance(value, float) else str(value) for key, value in flat.items()}


def test_docs_dvc_md_shows_the_metrics_of_the_tiny_build(first_build):
    """docs/dvc.md's `dvc metrics show` of the tiny config showed max_mi.b 0.27079, the build 0.27363."""
    metrics = json.loads(first_build[1]["results/aggregate/metrics.json"])
    shown = documented("dvc metrics show", "results/aggregate/metrics.json")
    assert shown == as_dvc_prints(metrics) | {"win_by": metrics["win_by"]}


def test_second_run_has_nothing_to_do(project):
    """A dry run right after the build schedules no job."""
    assert "Nothing to be done" in snakemake(project, "-n", "all").stdout


FIGURE_JOBS = {"figure_loss": 1, "figure_maps": 8, "figure_chosen": 1, "figure_distribution": 1, "figure_wins": 1}


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
    retries rerun nothing of the sample's build; the estimator, the scoring, the maps jobs (their MI bounds) and
    what reads them, not training."""
    module = project / "src/mifeatures/core/statistics/aggregation.py"
    original = edit(module, 'WIN_STATISTICS = ("mean", "max")', 'WIN_STATISTICS = ("max", "mean")')
    try:
        assert planned(project) == {"aggregate": 1, **FIGURE_JOBS, "provenance": 1, "all": 1}
    finally:
        module.write_text(original)
    original = edit(project / "src/mifeatures/core/information/mi.py", "/ total, 0.0, None)", "/ total, 0, None)")
    try:  # the estimator: the scoring and what reads its tables; neither training nor the loss figure
        figures = {rule: jobs for rule, jobs in FIGURE_JOBS.items() if rule != "figure_loss"}
        assert planned(project) == {"score": 4, "maps": 8, "aggregate": 1, **figures, "provenance": 1, "all": 1}
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


def test_a_reference_case_not_run_stops_the_findings_before_any_job(project):
    """findings.reference is one of the cases run: with cases [a, b], `snakemake -n protocols` names the key, the
    case and the choices before any job, while `all`, which has no findings, plans as usual."""
    selection = project / "a_and_b.yaml"
    selection.write_text(yaml.safe_dump({"cases": ["a", "b"]}))
    said = snakemake(project, "-n", "protocols", "--configfile", str(selection), check=False)
    assert said.returncode != 0
    assert ("findings.reference: case 'c' is not in cases ['a', 'b']; the findings test one case's lead over the "
            "others: set findings.reference to one of a, b") in said.stdout + said.stderr
    assert snakemake(project, "-n", "all", "--configfile", str(selection)).returncode == 0


def test_a_maps_figure_of_any_image_builds_without_rescoring(project, tmp_path):
    """`snakemake results/figures/maps_c_image12.png` failed once the DAG had run (the score stage had mapped
    figures.images only), and adding 12 to figures.images reran all four score jobs and what read them. Each
    image's maps are now a job of their own, on that image alone: the figure builds, verified current, with no
    score job, and adding the image to figures.images maps the other cases' image 12 and draws their figures."""
    root = copy_of(project, tmp_path)
    target = "results/figures/maps_c_image12.png"
    assert planned(root, target=target) == {"maps": 1, "figure_maps": 1}
    snakemake(root, target)
    said = run(root, MIFEATURES, "provenance", target, "--verify", check=False)
    assert said.returncode == 0 and f"{target}: current" in said.stdout, said.stdout + said.stderr
    assert np.load(root / f"results/maps/{ARTICLE_RUN}/c/scored-faithful/image12.npy").shape == (1, 32, 96, 96)
    set_params(root, {"figures": {"images": [10, 11, 12]}})
    assert planned(root) == {"maps": 3, "figure_maps": 3, "figure_chosen": 1, "provenance": 1, "all": 1}


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
    # sample, sizes 96/88/104, 4 cases trained (2 files) and scored (2 tables), each case's maps and bounds of
    # images 10 and 11, aggregate
    assert len(first) == 1 + 3 + 4 * 2 + 4 * 2 + 4 * 2 * 2 + 2 + 1
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
            assert planned(clone) == {"sample": 1, "grayscale": 3, "train": 4, "score": 4, "maps": 8, "aggregate": 1,
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
    # docs/dvc.md shows this experiment's numbers as its real output.
    metrics = as_dvc_prints(json.loads((clone / "results/aggregate/metrics.json").read_text()))
    shown = documented("dvc exp show --drop '.*' --keep 'Experiment|mean_mi|wins|train.lr'", "workspace")
    assert shown == {key: metrics[key] for key in shown if key != "train.lr"} | {"train.lr": "1e-05"}
