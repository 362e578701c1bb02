"""Speed of the score stage's MI: vectorised estimator vs the per-map reference it must equal.

Run: ``python -m pytest benchmarks/ --benchmark-columns=mean,stddev,rounds``; compare the two
``mean`` columns (the ratio is the speed-up). Numbers are machine-specific, so nothing here fails
on time; the equality of the two results is asserted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from mifeatures.data import make_sample
from mifeatures.grayscale import to_grayscale
from mifeatures.mi import mutual_information
from mifeatures.models import build_encoder

BINS = 30


@pytest.fixture(scope="module")
def image_and_maps():
    """One real 96×96 image and the 32 maps of a seeded case-c encoder."""
    image = to_grayscale(make_sample(1, seed=0))[0]
    torch.manual_seed(0)
    with torch.no_grad():
        maps = build_encoder("c").train()(torch.from_numpy(image)[None, None])[0].numpy()
    return image, maps


def per_map_reference(image, maps):
    """What the article ran: np.histogram2d and sklearn's MI, one map at a time."""
    return np.array([
        mutual_info_score(None, None, contingency=np.histogram2d(image.ravel(), m.ravel(), BINS)[0])
        for m in maps
    ])


def test_reference_per_map(benchmark, image_and_maps):
    """Baseline: 32 calls of histogram2d + mutual_info_score."""
    benchmark(per_map_reference, *image_and_maps)


def test_vectorised(benchmark, image_and_maps):
    """mifeatures.mi: one bincount for all 32 maps; must equal the baseline to 1e-9."""
    result = benchmark(mutual_information, *image_and_maps, BINS)
    np.testing.assert_allclose(result, per_map_reference(*image_and_maps), rtol=0, atol=1e-9)
