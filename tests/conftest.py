"""Shared fixtures: small real data run through the real stages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mifeatures.workflow.params import load_params, merge
from mifeatures.core.data.sample import make_sample
from mifeatures.core.data.images import resize_images, to_grayscale
from mifeatures.core.networks.shapes import map_size
from mifeatures.core.networks.training import run

from helpers import train_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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
        paths["encoder"], paths["loss"])
    return paths


@pytest.fixture(scope="session")
def protocols_build(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A two-case (a, c), one-image tiny build of `all`, then of `protocols` (two cases being the fewest the
    findings compare), and the bytes of every results file as `all` left them. Shared by the report and the
    protocols' workflow test, which work on copies of it or only read it."""
    root = tmp_path_factory.mktemp("protocols") / "tiny"
    root.mkdir()
    for name in ("workflow", "src", "environment.yml"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, root / name)
    params = merge(load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"]),
                   {"cases": ["a", "c"], "figures": {"images": [10]}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    article = {}
    for target in ("all", "protocols"):
        result = subprocess.run([str(BIN / "snakemake"), target], cwd=root, env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        if target == "all":
            article = {str(path.relative_to(root)): path.read_bytes()
                       for path in sorted((root / "results").rglob("*")) if path.is_file() and "logs" not in path.parts}
    return root, article
