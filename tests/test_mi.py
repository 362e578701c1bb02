"""Plug-in MI from joint histograms, held to numpy's histograms and sklearn's MI on real data."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from mifeatures.core.information import binning, mi
from mifeatures.core.data.sample import make_sample
from mifeatures.core.data.images import to_grayscale
from mifeatures.core.information.mi import bin_indices, mutual_information, mutual_information_many
from mifeatures.core.networks.models import build_encoder


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


def numpy_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Each value's bin as np.histogram2d finds it: searchsorted on its edges, the maximum moved
    into the last bin."""
    flat = values.ravel()
    edges = np.histogram2d(flat, flat, bins)[1]
    index = np.searchsorted(edges, flat, side="right") - 1
    index[flat == edges[-1]] -= 1
    return index


def encoder_maps(images: np.ndarray) -> np.ndarray:
    """The 32 maps of each image (B, 32, 96, 96) by a seeded case-c encoder, one image per
    forward pass in train mode, as the score stage computes them."""
    torch.manual_seed(0)
    encoder = build_encoder("c").train()
    with torch.no_grad():
        return np.stack([encoder(torch.as_tensor(image, dtype=torch.float32)[None, None])[0].numpy()
                         for image in images])


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    """Three real grayscale 96×96 photo crops, float32 in [0, 1]."""
    return to_grayscale(make_sample(3, 0)).astype(np.float32)


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


def test_float32_image_is_binned_in_the_maps_float64(image):
    """Against a float64 map, histogram2d bins a float32 image on float64 edges, which differ
    from its float32 ones: pixels set just beside those edges must land as it puts them."""
    edges32 = np.linspace(image.min(), image.max(), 31)
    edges64 = np.linspace(np.float64(image.min()), np.float64(image.max()), 31)
    assert edges32.dtype == np.float32 and np.any(edges32.astype(np.float64) != edges64)
    beside = np.concatenate([np.nextafter(edges32, -np.inf), edges32, np.nextafter(edges32, np.inf)])
    probe = image.copy().ravel()
    probe[: beside.size] = np.clip(beside, image.min(), image.max())
    probe = probe.reshape(image.shape)
    noise = np.random.default_rng(1).standard_normal((2, *image.shape))
    assert not np.array_equal(numpy_bins(probe, 30), numpy_bins(probe.astype(np.float64), 30))
    got = mutual_information(probe, noise, 30)
    np.testing.assert_allclose(got, reference_mi(probe, noise, 30), rtol=0, atol=1e-9)


def test_maps_with_values_on_and_beside_every_edge(image, feature_maps):
    """Maps whose values sit exactly on each of their bin edges, one ulp either side, and at the
    maximum (many times), in float32 and float64, agree with the reference."""
    for dtype in (np.float32, np.float64):
        for source in (feature_maps[0], feature_maps[5]):
            values = map_with_values_on_and_beside_every_edge(source.astype(dtype))
            np.testing.assert_array_equal(bin_indices(values, 30), numpy_bins(values, 30))
            got = mutual_information(image, values[None], 30)
            np.testing.assert_allclose(got, reference_mi(image, values[None], 30), rtol=0, atol=1e-9)


def map_with_values_on_and_beside_every_edge(source: np.ndarray) -> np.ndarray:
    """``source`` with values exactly on each of its histogram2d edges, one ulp either side, and
    many at the maximum."""
    values = source.ravel().copy()
    edges = np.histogram2d(values, values, 30)[1]
    special = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
    special = special[(special >= edges[0]) & (special <= edges[-1])]
    values[: special.size] = special
    values[-500:] = edges[-1]  # ties at the maximum
    return values.reshape(source.shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_joint_tables_are_histogram2d_tables(image, feature_maps, dtype):
    """Count for count, the tables behind the MI are np.histogram2d's: binned by the compiled
    pass (float32, float64) or by numpy (float16, and rows too narrow for the arithmetic), on
    real maps, maps with values on and beside every edge, and a range of a few dozen ulps."""
    ulps = np.random.default_rng(11).integers(0, 40, image.shape)
    narrow = (dtype(1000) + ulps * np.spacing(dtype(1000))).astype(dtype)
    edge_values = map_with_values_on_and_beside_every_edge(feature_maps[5].astype(dtype))
    maps, pixels = np.stack([*feature_maps[:3].astype(dtype), edge_values, narrow]), image.astype(dtype)
    counts, binner = mi._joint_counts(pixels.reshape(1, -1), [maps.reshape(len(maps), -1)], 30)
    assert binner.unprovable.tolist() == [len(maps)]  # the narrow map (row 0 is the image)
    for table, values in zip(counts[0], maps):
        np.testing.assert_array_equal(table, np.histogram2d(pixels.ravel(), values.ravel(), 30)[0])


def test_float32_maps_against_float64_images_were_copied_to_float64_first(many_images, many_maps):
    """The scoring's images are float64 and its maps float32, which numpy's histogram2d bins in float64: the maps
    were copied to float64 first (a third of an image's time). Binned as they are, every joint table is still
    np.histogram2d's, and every MI the bits of the float64 copies' (the reference before the change)."""
    images = many_images.astype(np.float64)
    assert mi.binned_as(many_maps[0].reshape(32, -1), images.dtype).dtype == np.float32  # no copy
    counts, _ = mi._joint_counts(images.reshape(len(images), -1), [m.reshape(32, -1) for m in many_maps], 30)
    for image, maps, tables in zip(images, many_maps, counts):
        for values, table in zip(maps, tables):
            np.testing.assert_array_equal(table, np.histogram2d(image.ravel(), values.ravel(), 30)[0])
    np.testing.assert_array_equal(mutual_information_many(images, many_maps, 30),
                                  mutual_information_many(images, many_maps.astype(np.float64), 30))


def test_constant_image_gives_zero_for_every_map(feature_maps):
    """A constant image carries no information: every map's MI is exactly 0, as in sklearn."""
    flat = np.full((96, 96), 0.25, np.float32)
    got = mutual_information(flat, feature_maps[:4], 30)
    assert got.tolist() == [0.0] * 4
    assert reference_mi(flat, feature_maps[:4], 30).tolist() == [0.0] * 4


@pytest.mark.parametrize(
    "make_map",
    [
        lambda rng: (1000 + 1e-4 * rng.standard_normal((96, 96))).astype(np.float32),  # range ≈ 1 ulp-scale
        lambda rng: np.where(rng.random((96, 96)) < 0.5, 0.0, 1e-44).astype(np.float32),  # zero step
        lambda rng: rng.integers(0, 46, (96, 96)) * np.float32(1.4e-45),  # subnormal step: edges out of order
        lambda rng: rng.choice([-1.5e38, 0.0, 1.5e38], (96, 96)).astype(np.float32),  # near float32's limit
        lambda rng: rng.integers(0, 256, (96, 96)).astype(np.uint8),
        lambda rng: rng.standard_normal((96, 96)).astype(np.float16),
    ],
    ids=["narrow-range", "zero-step", "edges-out-of-order", "huge-range", "uint8", "float16"],
)
def test_awkward_maps_match_sklearn(image, make_map):
    """Maps whose range defeats the arithmetic shortcut, or of other dtypes, still give the
    reference MI and numpy's bins."""
    values = make_map(np.random.default_rng(7))
    np.testing.assert_array_equal(bin_indices(values, 30), numpy_bins(values, 30))
    maps = np.stack([values, values.astype(np.float32) + image])  # the map, and the image seen through it
    got = mutual_information(image, maps, 30)
    np.testing.assert_allclose(got, reference_mi(image, maps, 30), rtol=0, atol=1e-9)
    swapped = mutual_information(values, image[None], 30)  # the awkward values as the image
    np.testing.assert_allclose(swapped, reference_mi(values, image[None], 30), rtol=0, atol=1e-9)


def test_strided_inputs_match_sklearn(image, feature_maps):
    """Views that are not C-contiguous (flipped, transposed, Fortran-ordered) give the reference MI."""
    maps = feature_maps[::3, ::-1, :].transpose(0, 2, 1)
    image_view = np.asfortranarray(image)[::-1].T
    got = mutual_information(image_view, maps, 30)
    np.testing.assert_allclose(got, reference_mi(image_view, maps, 30), rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_bin_indices_match_numpy_on_random_data(dtype):
    """Value by value, bin_indices equals numpy's search on many random arrays: lattices,
    offsets far from zero, heavy tails, tiny and huge scales, negative ranges."""
    rng = np.random.default_rng(3)
    largest_power = int(np.log10(np.finfo(dtype).max))
    for trial in range(60):
        kind = trial % 5
        if kind == 0:
            values = rng.integers(0, 256, 4000) / 255  # a lattice, many values on or near edges
        elif kind == 1:
            values = 50 + rng.standard_normal(4000)  # offset far from zero
        elif kind == 2:
            values = np.clip(rng.standard_cauchy(4000), -1e4, 1e4)  # heavy tails
        elif kind == 3:
            # subnormal to huge
            values = rng.random(4000) * 10.0 ** rng.integers(-largest_power - 4, largest_power)
        else:
            values = -rng.random(4000) * 7
        values = values.astype(dtype)
        for bins in (2, 30, 64):
            np.testing.assert_array_equal(bin_indices(values, bins), numpy_bins(values, bins))


def test_row_edges_equal_numpy_linspace():
    """The vectorised edges equal np.linspace row by row, bit for bit, zero-step rows included."""
    low = np.array([0.0, -3.5, 1e-45, 7.0], np.float32)
    high = np.array([1.0, 2.25, 3e-45, 7.0 + 1e-5], np.float32)
    for lows, highs in ((low[[0, 1, 3]], high[[0, 1, 3]]), (low, high)):  # without, then with a zero step
        rows = binning.linspace_rows(lows, highs, 30)
        expected = np.stack([np.linspace(lo, hi, 31) for lo, hi in zip(lows, highs)])
        assert rows.dtype == expected.dtype
        np.testing.assert_array_equal(rows, expected)


@pytest.fixture(scope="module")
def many_images() -> np.ndarray:
    """Nine real grayscale 96×96 images, float32."""
    return to_grayscale(make_sample(9, 5)).astype(np.float32)


@pytest.fixture(scope="module")
def many_maps(many_images) -> np.ndarray:
    """Their encoder maps (9, 32, 96, 96)."""
    return encoder_maps(many_images)


def test_many_images_match_sklearn(many_images, many_maps, monkeypatch):
    """mutual_information_many over 9 real images, in calls of 4 images (so 4 + 4 + 1), equals
    the reference for every image and map, and mutual_information per image exactly."""
    monkeypatch.setattr(mi, "_IMAGES_PER_CALL", 4)
    got = mutual_information_many(many_images, many_maps, 30)
    assert got.shape == (9, 32)
    reference = np.stack([reference_mi(image, maps, 30) for image, maps in zip(many_images, many_maps)])
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-9)
    single = np.stack([mutual_information(image, maps, 30) for image, maps in zip(many_images, many_maps)])
    np.testing.assert_array_equal(got, single)


def test_many_images_from_a_generator_with_mixed_dtypes(many_images, many_maps):
    """Maps from a generator, float64 for some images, and an all-constant map: each row
    equals mutual_information on its pair."""

    def maps_of_each_image():
        for index, maps in enumerate(many_maps):
            maps = maps.astype(np.float64) if index % 3 == 0 else maps.copy()
            maps[index % 32] = 0.0
            yield maps

    got = mutual_information_many(many_images, maps_of_each_image(), 30)
    for index, (row, image, maps) in enumerate(zip(got, many_images, maps_of_each_image())):
        np.testing.assert_array_equal(row, mutual_information(image, maps, 30))
        assert row[index % 32] == 0.0


def test_many_images_memory_is_flat_in_the_number_of_images(many_images, many_maps, monkeypatch):
    """Streaming maps from a generator, the peak of traced memory for 64 images stays near that
    for 8: maps are held a few images at a time, never all."""
    monkeypatch.setattr(mi, "_IMAGES_PER_CALL", 4)

    def peak(n_images: int) -> int:
        images = np.resize(many_images, (n_images, 96, 96))
        maps = (many_maps[index % len(many_maps)].copy() for index in range(n_images))
        tracemalloc.start()
        try:
            mutual_information_many(images, maps, 30)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(8), peak(64)
    assert large < 1.25 * small
    assert large < 16 * many_maps[0].nbytes  # far below the 64 images' maps


def test_many_images_rejects_bad_input(many_images, many_maps):
    """No images, unequal numbers of images and maps, or of maps per image raise ValueError."""
    with pytest.raises(ValueError, match="no images"):
        mutual_information_many([], [], 30)
    with pytest.raises(ValueError):
        mutual_information_many(many_images[:3], many_maps[:2], 30)
    with pytest.raises(ValueError, match=r"as many maps as the first \(32\), got 5"):
        mutual_information_many(many_images[:2], [many_maps[0], many_maps[1][:5]], 30)
    with pytest.raises(ValueError, match="bins must be ≥ 2"):
        mutual_information_many(many_images[:1], many_maps[:1], 1)
