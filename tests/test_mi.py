"""Plug-in MI from joint histograms, held to numpy's histograms and sklearn's MI on real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from mifeatures.data import make_sample
from mifeatures.grayscale import to_grayscale
from mifeatures.mi import bin_indices, mutual_information
from mifeatures.models import build_encoder


def reference_mi(image: np.ndarray, maps: np.ndarray, bins: int) -> np.ndarray:
    """sklearn's MI on the counts of np.histogram2d, one value per map."""
    return np.array(
        [
            mutual_info_score(None, None, contingency=np.histogram2d(image.ravel(), m.ravel(), bins)[0])
            for m in maps
        ]
    )


def histogram_counts(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin counts of ``bin_indices``, via np.bincount."""
    return np.bincount(bin_indices(values, bins), minlength=bins)


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    """Three real grayscale 96×96 photo crops, float32 in [0, 1]."""
    return to_grayscale(make_sample(3, 0))


@pytest.fixture(scope="module")
def image(gray) -> np.ndarray:
    """One real grayscale 96×96 image, float32."""
    return gray[0]


@pytest.fixture(scope="module")
def feature_maps(image) -> np.ndarray:
    """The 32 maps (32, 96, 96) of a freshly seeded case-c encoder in train mode on ``image``."""
    torch.manual_seed(0)
    encoder = build_encoder("c")
    encoder.train()
    with torch.no_grad():
        maps = encoder(torch.from_numpy(image).float().reshape(1, 1, 96, 96))[0].numpy()
    assert maps.shape == (32, 96, 96)
    return maps


def test_real_feature_maps_match_sklearn(image, feature_maps):
    """All 32 real encoder maps give sklearn's histogram2d MI to 1e-9 at 30 bins."""
    got = mutual_information(image, feature_maps, bins=30)
    assert got.shape == (32,)
    np.testing.assert_allclose(got, reference_mi(image, feature_maps, 30), rtol=0, atol=1e-9)
    assert np.all(got > 0)  # real, non-constant maps carry information about the image


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_match_sklearn(image, feature_maps, dtype):
    """float32 and float64 inputs both give the reference MI to 1e-9."""
    img, maps = image.astype(dtype), feature_maps.astype(dtype)
    got = mutual_information(img, maps, bins=30)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, reference_mi(img, maps, 30), rtol=0, atol=1e-9)


def test_constant_map_gives_exact_zero(image, feature_maps):
    """A dead-ReLU (all-zero) map gets MI exactly 0, as does the reference, next to a live map."""
    maps = np.stack([np.zeros_like(image), feature_maps[0], np.full_like(image, 3.5)])
    got = mutual_information(image, maps, bins=30)
    ref = reference_mi(image, maps, 30)
    assert got[0] == 0.0 and got[2] == 0.0
    assert ref[0] == 0.0 and ref[2] == 0.0
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    assert got[1] > 0


def test_image_against_itself_and_noise(image):
    """MI(image, image) and MI(image, N(0,1) noise) match the reference; self-MI dominates noise."""
    noise = np.random.default_rng(0).standard_normal(image.shape)
    maps = np.stack([image, noise])
    got = mutual_information(image, maps, bins=30)
    np.testing.assert_allclose(got, reference_mi(image, maps, 30), rtol=0, atol=1e-9)
    assert got[0] > 10 * got[1]
    assert got[1] < 0.1


def test_self_mi_equals_plugin_entropy(gray):
    """MI(image, image) equals −Σ p log p of the image's own 30-bin numpy histogram."""
    for img in gray:
        counts = np.histogram(img, bins=30)[0]
        p = counts[counts > 0] / img.size
        entropy = float(-(p * np.log(p)).sum())
        got = mutual_information(img, img[None], bins=30)[0]
        assert got == pytest.approx(entropy, abs=1e-9)


@pytest.mark.parametrize("bins", [2, 30, 64])
def test_bins_match_sklearn(gray, feature_maps, bins):
    """bins = 2, 30 and 64 each agree with the reference, on real maps plus another real image."""
    image = gray[0]
    maps = np.concatenate([feature_maps, gray[1:]])
    got = mutual_information(image, maps, bins=bins)
    np.testing.assert_allclose(got, reference_mi(image, maps, bins), rtol=0, atol=1e-9)


def test_more_bins_do_not_lower_self_mi(image):
    """Self-MI (the histogram entropy) grows with the number of bins: 2 < 30 < 64."""
    values = [mutual_information(image, image[None], bins=b)[0] for b in (2, 30, 64)]
    assert values[0] < values[1] < values[2]
    assert values[0] <= np.log(2) + 1e-12


@pytest.mark.parametrize("bins", [2, 7, 30, 64])
def test_bin_indices_match_numpy_histogram(gray, feature_maps, bins):
    """bincount(bin_indices) equals np.histogram's counts on real images and maps."""
    for values in [gray[0], gray[1].astype(np.float64), feature_maps[3], feature_maps[17]]:
        index = bin_indices(values, bins)
        assert index.shape == (values.size,)
        assert index.min() >= 0 and index.max() <= bins - 1
        np.testing.assert_array_equal(histogram_counts(values, bins), np.histogram(values, bins)[0])


def test_bin_indices_maximum_in_last_bin():
    """Values on the bin edges, the maximum included, land where np.histogram puts them."""
    values = np.linspace(0.0, 1.0, 31)  # exactly the 30-bin edges
    index = bin_indices(values, 30)
    assert index[-1] == 29  # the maximum is not pushed into a 31st bin
    assert index[-2] == 29
    np.testing.assert_array_equal(histogram_counts(values, 30), np.histogram(values, 30)[0])
    values32 = values.astype(np.float32)
    np.testing.assert_array_equal(histogram_counts(values32, 30), np.histogram(values32, 30)[0])


def test_bin_indices_constant_array():
    """A constant array is binned like numpy's [v − 0.5, v + 0.5] range: all in the middle bin."""
    for bins in (2, 5, 30):
        values = np.full(17, 0.25)
        np.testing.assert_array_equal(histogram_counts(values, bins), np.histogram(values, bins)[0])
    assert set(bin_indices(np.full(9, 2.0), 5).tolist()) == {2}


def test_bin_indices_integer_values():
    """Integer pixel values (uint8) are binned as np.histogram bins them."""
    values = make_sample(1, 3)[0, ..., 0]
    for bins in (2, 30, 64):
        np.testing.assert_array_equal(histogram_counts(values, bins), np.histogram(values, bins)[0])


@pytest.mark.parametrize("bins", [1, 0, -3])
def test_too_few_bins_raise(image, bins):
    """bins < 2 raises ValueError naming bins."""
    with pytest.raises(ValueError, match=rf"bins must be ≥ 2, got {bins}"):
        mutual_information(image, image[None], bins=bins)


@pytest.mark.parametrize(
    "shape",
    [(96, 96), (1, 88, 88), (2, 96, 95), (1, 1, 96, 96), (0, 96, 96)],
)
def test_wrong_map_shape_raises(image, shape):
    """Maps that are not (K ≥ 1, 96, 96) for a 96×96 image raise ValueError with the expected shape."""
    maps = np.zeros(shape, dtype=np.float32)
    with pytest.raises(ValueError, match=r"maps must be \(K ≥ 1, 96, 96\), got " + re_shape(shape)):
        mutual_information(image, maps)


def re_shape(shape: tuple[int, ...]) -> str:
    """Regex for a tuple's repr."""
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")
