"""Shared fixtures: small real data run through the real stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mifeatures.sample import make_sample
from mifeatures.images import resize_images, to_grayscale
from mifeatures.shapes import map_size
from mifeatures.training import run

from helpers import train_config

REPO = Path(__file__).resolve().parents[1]


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
