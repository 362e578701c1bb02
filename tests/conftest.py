"""Shared fixtures: small real data run through the real stages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import psutil
import pytest
from filelock import FileLock

from mifeatures.workflow.memory import MARGIN, MB, stage_mb
from mifeatures.core.data.sample import make_sample
from mifeatures.core.data.images import resize_images, to_grayscale
from mifeatures.core.networks.shapes import map_size
from mifeatures.core.networks.training import run

from builds import build_tiny
from helpers import CRITICS, train_config

# What one xdist worker may hold at once: a tiny build running two trainings of the largest case at their
# measured peak (mifeatures.workflow.memory declares them with a margin on top).
WORKER_MB = 2 * stage_mb("train", "b", 20, critics=CRITICS) / MARGIN


# The files that take longest, first: with `--dist loadfile --no-loadscope-reorder` xdist hands files to the
# workers in collection order, so no worker is left running a long file alone at the end. The training file
# comes second: it trains one small case at a time in-process, so the other worker neither waits idle for the
# tiny build the first one is making nor runs a second build beside it (SLURM second peaked at 21.5 of 24 GB).
# Worker-seconds measured with 2 workers on this project's 2 cores: audit 960, workflow 750, SLURM 710,
# train 660, records 430, report 260, seeds together 170, own images 170; every other file under 65.
LONGEST_FIRST = ("test_workflow.py", "test_train.py", "test_slurm.py", "test_audit.py", "test_records.py",
                 "test_report.py", "test_together.py", "test_folder.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order is kept


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (make test): a worker per core, as many as the memory available now holds. Each test file runs
    whole on one worker (`--dist loadfile`), so a module's fixtures are built once."""
    return max(1, min(os.cpu_count() or 1, int(psutil.virtual_memory().available / MB // WORKER_MB)))


@pytest.fixture(scope="session")
def gray_images() -> np.ndarray:
    """Eight real 96×96 grayscale images cut from scikit-image's photos."""
    return to_grayscale(make_sample(8, seed=0))


@pytest.fixture(scope="session")
def trained_case(tmp_path_factory, gray_images) -> dict[str, Path]:
    """Case a trained for one epoch (two steps of 4) by the train stage, with its inputs and outputs."""
    folder = tmp_path_factory.mktemp("trained_a")
    paths = {"encoder_images": folder / "size96.npy", "sized_images": folder / "size88.npy",
             "encoder": folder / "encoder.pt", "loss": folder / "loss.csv"}
    np.save(paths["encoder_images"], gray_images)
    np.save(paths["sized_images"], resize_images(gray_images, map_size("a")))
    run("a", paths["encoder_images"], paths["sized_images"], train_config(epochs=1, batch_size=4),
        paths["encoder"], paths["loss"], critics=CRITICS)
    return paths


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory, worker_id) -> Path:
    """One tiny build of the project (params.yaml + config/tiny.yaml) for the whole run, which no test touches:
    the first worker that needs it builds it while the others wait on a lock in the folder all of them share
    (pytest-xdist's recipe for session data); a build that failed half-way is made again."""
    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent
    root, done = shared / "tiny_build" / "tiny", shared / "tiny_build.done"
    with FileLock(shared / "tiny_build.lock"):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            build_tiny(root)
            done.touch()
    return root


@pytest.fixture(scope="module")
def built(tiny_build, tmp_path_factory) -> Path:
    """A copy of the tiny build, mtimes and Snakemake's metadata kept, that the tests of one file share and do not
    edit: each test attacks a copy of it (builds.copy_of)."""
    return shutil.copytree(tiny_build, tmp_path_factory.mktemp("built") / "tiny", symlinks=True)
