"""Speed of the score stage's MI: our estimators vs the per-map reference they must equal.

Run, one thread per process so that the numbers are per core::

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python -m pytest benchmarks/ -p no:cacheprovider \\
        --benchmark-columns=mean,stddev,rounds

and compare the ``mean`` of each pair (``reference_*`` and ours) run on the same data; their
ratio is the speed-up. Numbers are machine-specific, so nothing here fails on time; the
equality of the results is asserted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from mifeatures.core.data.sample import make_sample
from mifeatures.core.data.images import to_grayscale
from mifeatures.core.information.mi import mutual_information, mutual_information_many
from mifeatures.core.networks.models import build_encoder

BINS = 30
MANY = 64


def encoder_maps(images: np.ndarray) -> np.ndarray:
    """The 32 maps of each image by a seeded case-c encoder in train mode, one image a pass."""
    torch.manual_seed(0)
    encoder = build_encoder("c").train()
    with torch.no_grad():
        return np.stack([encoder(torch.from_numpy(image)[None, None])[0].numpy() for image in images])


@pytest.fixture(scope="module")
def image_and_maps():
    """One real 96×96 image and its 32 maps."""
    image = to_grayscale(make_sample(1, seed=0))[0]
    return image, encoder_maps(image[None])[0]


@pytest.fixture(scope="module")
def many_images_and_maps():
    """64 real 96×96 images and their maps (64, 32, 96, 96)."""
    images = to_grayscale(make_sample(MANY, seed=0))
    return images, encoder_maps(images)


def per_map_reference(image, maps):
    """What the article ran: np.histogram2d and sklearn's MI, one map at a time."""
    return np.array([
        mutual_info_score(None, None, contingency=np.histogram2d(image.ravel(), m.ravel(), BINS)[0])
        for m in maps
    ])


def per_image_reference(images, maps):
    """``per_map_reference`` for each image: (B, 32)."""
    return np.stack([per_map_reference(image, image_maps) for image, image_maps in zip(images, maps)])


def test_reference_per_map(benchmark, image_and_maps):
    """Baseline for one image: 32 calls of histogram2d + mutual_info_score."""
    benchmark(per_map_reference, *image_and_maps)


def test_vectorised(benchmark, image_and_maps):
    """mutual_information on one image's 32 maps; must equal the baseline to 1e-9."""
    result = benchmark(mutual_information, *image_and_maps, BINS)
    np.testing.assert_allclose(result, per_map_reference(*image_and_maps), rtol=0, atol=1e-9)


def test_reference_many_images(benchmark, many_images_and_maps):
    """Baseline for 64 images: 64 × 32 calls of histogram2d + mutual_info_score."""
    benchmark.pedantic(per_image_reference, many_images_and_maps, rounds=3, iterations=1)


def test_many_images(benchmark, many_images_and_maps):
    """mutual_information_many on 64 images × 32 maps; must equal the baseline to 1e-9."""
    result = benchmark(mutual_information_many, *many_images_and_maps, BINS)
    assert result.shape == (MANY, 32)
    np.testing.assert_allclose(result, per_image_reference(*many_images_and_maps), rtol=0, atol=1e-9)
