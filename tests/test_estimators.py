"""Bias-aware MI estimators on smooth independent fields, real photos and white noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from mifeatures.core.information.estimators import corrected_mi, miller_madow, spatial_null
from mifeatures.core.data.images import to_grayscale
from mifeatures.core.information.ksg import _ksg, ksg_mi
from mifeatures.core.information.mi import mutual_information
from mifeatures.core.data.sample import make_sample
from mifeatures.core.information.shifts import K_SHIFTS, MIN_SHIFT_FRACTION, draw_shifts

BINS = 30
SIZE = 96
N = SIZE * SIZE
PLUG_IN_BIAS = (BINS - 1) ** 2 / (2 * N)  # first-order bias of the plug-in MI, independent pixels: 0.0456


def smooth_field(rng: np.random.Generator, sigma: float = 2.0) -> np.ndarray:
    """Gaussian white noise blurred with σ px (scipy's default reflecting edges), 96×96."""
    return gaussian_filter(rng.standard_normal((SIZE, SIZE)), sigma)


@pytest.fixture(scope="module")
def smooth_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Six independent (image, 4 maps) sets of σ = 2 px smooth Gaussian fields, seeds 0–5."""
    pairs = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        pairs.append((smooth_field(rng), np.stack([smooth_field(rng) for _ in range(4)])))
    return pairs


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    """Four real grayscale 96×96 photo crops (astronaut, brick, camera, chelsea), float32."""
    return to_grayscale(make_sample(4, 0)).astype(np.float32)


def dependent_maps(image: np.ndarray) -> np.ndarray:
    """Maps that depend on ``image``: a σ = 2 blurred copy, its square (monotone on [0, 1]), and
    the image plus Gaussian noise of 0.3 its standard deviation."""
    noise = np.random.default_rng(1).standard_normal(image.shape)
    return np.stack([gaussian_filter(image, 2.0), image**2, image + 0.3 * image.std() * noise])


def noisy_copies(image: np.ndarray) -> np.ndarray:
    """The image plus noise of 1.0, 0.3 and 0.1 of its standard deviation: increasing dependence."""
    noise = np.random.default_rng(2).standard_normal(image.shape)
    return np.stack([image + level * image.std() * noise for level in (1.0, 0.3, 0.1)])


def shuffled(maps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each map with its pixels randomly permuted."""
    return np.stack([rng.permutation(m.ravel()).reshape(m.shape) for m in maps])


# --- spatial null on smooth independent fields ------------------------------------------------


def test_corrected_mi_is_zero_for_smooth_independent_fields(smooth_pairs):
    """24 independent σ = 2 field pairs: the plug-in MI is above the white-noise bias
    (seen: mean 0.0497, 0.041–0.062) while plug-in − spatial null averages 0 (seen: mean
    +0.0018, per map −0.006…+0.013; the +0.0016 that remains over 120 pairs comes from the seam
    the roll puts through non-periodic fields: with mode="wrap" fields it is +0.0002).

    A single pair's corrected MI keeps the plug-in's own spread (sd ≈ 0.0044 over 120 pairs),
    which no null removes, hence the per-map bound of 0.02 (≈ 4.5 sd) and 0.005 on the mean.
    """
    plug_in = np.concatenate([mutual_information(image, maps, BINS) for image, maps in smooth_pairs])
    corrected = np.concatenate([corrected_mi(image, maps, BINS) for image, maps in smooth_pairs])
    assert plug_in.mean() > PLUG_IN_BIAS
    assert plug_in.min() > 0.03
    assert abs(corrected.mean()) < 0.005
    assert np.abs(corrected).max() < 0.02


def test_shuffle_null_under_corrects_smooth_fields(smooth_pairs):
    """A null of pixel-shuffled maps only measures the white-noise bias: on smooth independent
    fields it leaves ≈ 0.012 nats (seen 0.0128 over these 24 pairs), the spatial null ≈ 0.002."""
    rng = np.random.default_rng(10)
    by_shuffle, by_shift = [], []
    for image, maps in smooth_pairs:
        plug_in = mutual_information(image, maps, BINS)
        nulls = [mutual_information(image, shuffled(maps, rng), BINS) for _ in range(K_SHIFTS)]
        shuffle_null = np.mean(nulls, axis=0)
        by_shuffle.append(plug_in - shuffle_null)
        by_shift.append(plug_in - spatial_null(image, maps, BINS))
    assert np.mean(by_shuffle) > 0.008
    assert np.mean(by_shuffle) > np.mean(by_shift) + 0.006


def test_miller_madow_under_corrects_smooth_fields(smooth_pairs):
    """Miller–Madow removes only the independent-pixel bias: smooth fields keep ≈ 0.025 nats."""
    mm = np.concatenate([miller_madow(image, maps, BINS) for image, maps in smooth_pairs])
    assert mm.mean() > 0.015


# --- dependent maps ---------------------------------------------------------------------------


def test_corrected_mi_stays_positive_for_dependent_maps(gray, smooth_pairs):
    """A blurred copy, a monotone function and a noisy copy of four real photos keep corrected
    MI > 0.2 nats (seen: 0.226 – 2.57), clearly above independent σ = 2 and σ = 4 smooth fields
    against the same photos (seen: −0.012 … 0.046). Smoother fields have fewer effective
    samples, so their corrected MI scatters more: over 40 photo–field pairs, sd 0.007 at σ = 2
    and 0.017 at σ = 4 (means +0.002, +0.004), hence the bound 0.08 (≈ 4.5 sd at σ = 4)."""
    independent = []
    for image in gray:
        corrected = corrected_mi(image, dependent_maps(image), BINS)
        assert np.all(corrected > 0.2), corrected
        rng = np.random.default_rng(3)
        fields = np.stack([smooth_field(rng, 2.0), smooth_field(rng, 4.0)])
        independent.append(corrected_mi(image, fields, BINS))
        assert corrected.min() > np.abs(independent[-1]).max() + 0.1
    assert np.abs(np.concatenate(independent)).max() < 0.08


def test_spatial_null_is_the_mean_over_rolled_maps(gray):
    """The null equals, to round-off, the plug-in MI of the image against each map rolled by
    each drawn shift, averaged (it rolls the image back instead)."""
    image, maps = gray[0], dependent_maps(gray[0])
    shifts = draw_shifts(image.shape, 5, seed=4)
    expected = np.mean(
        [mutual_information(image, np.roll(maps, (dy, dx), axis=(1, 2)), BINS) for dy, dx in shifts], 0
    )
    got = spatial_null(image, maps, BINS, shifts=5, seed=4)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        corrected_mi(image, maps, BINS, 5, 4), mutual_information(image, maps, BINS) - expected, atol=1e-12
    )


# --- Miller–Madow -----------------------------------------------------------------------------


def test_miller_madow_hand_example():
    """x, y on three values, six pixels in six distinct joint cells: plug-in MI = log 1.5, and
    the correction (m_xy − m_x − m_y + 1)/(2N) = (6 − 3 − 3 + 1)/12."""
    x = np.array([[0.0, 0.0, 1.0], [1.0, 2.0, 2.0]])
    y = np.array([[0.0, 1.0, 1.0], [2.0, 2.0, 0.0]])
    assert mutual_information(x, y[None], 3)[0] == pytest.approx(np.log(1.5), abs=1e-12)
    assert miller_madow(x, y[None], 3)[0] == pytest.approx(np.log(1.5) - 1 / 12, abs=1e-12)
    # y = x: 3 joint cells, so the correction is (3 − 3 − 3 + 1)/12 = −1/6: MM lies above.
    assert miller_madow(x, x[None], 3)[0] == pytest.approx(np.log(3) + 1 / 6, abs=1e-12)
    # A constant map carries nothing, corrected or not.
    assert miller_madow(x, np.zeros((1, 2, 3)), 3).tolist() == [0.0]


def test_miller_madow_matches_histogram2d_cell_counts(gray):
    """On real photos against each other, float32 image and float64 maps (binned in float64, as
    histogram2d does), the correction is that of np.histogram2d's non-empty cells."""
    image = gray[0]
    maps = np.stack([gray[1], gray[2] ** 3, gray[3] + 0.1 * gray[0]]).astype(np.float64)
    for m, got in zip(maps, miller_madow(image, maps, BINS) - mutual_information(image, maps, BINS)):
        table = np.histogram2d(image.ravel(), m.ravel(), BINS)[0]
        m_xy, m_x, m_y = (np.count_nonzero(t) for t in (table, table.sum(1), table.sum(0)))
        assert got == pytest.approx(-(m_xy - m_x - m_y + 1) / (2 * N), abs=1e-12)


@pytest.mark.parametrize("side", [88, 96, 104])
def test_miller_madow_on_white_noise(side):
    """Independent uniform white noise, 80 maps: every one of the 900 joint cells is filled
    (expected empty cells 900·e^(−N/900) ≤ 0.16), so MM = plug-in − (bins − 1)²/(2N) to within
    a few empty cells; and MM's mean is what remains of the bias, the second-order term
    bins⁴/(12N²) (0.0011 … 0.0006), to within 4 standard errors of its χ² spread,
    sd = √(2(bins − 1)²)/(2N)."""
    n = side * side
    plug_in, mm = [], []
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        image, maps = rng.random((side, side)), rng.random((8, side, side))
        plug_in.append(mutual_information(image, maps, BINS))
        mm.append(miller_madow(image, maps, BINS))
    plug_in, mm = np.concatenate(plug_in), np.concatenate(mm)
    first = (BINS - 1) ** 2 / (2 * n)
    np.testing.assert_allclose(plug_in - mm, first, rtol=0, atol=5 / (2 * n))
    standard_error = np.sqrt(2 * (BINS - 1) ** 2) / (2 * n) / np.sqrt(mm.size)
    assert abs(mm.mean() - BINS**4 / (12 * n**2)) < 4 * standard_error
    assert abs(mm.mean()) < 0.003 < plug_in.mean() - 0.03


# --- KSG --------------------------------------------------------------------------------------


def test_ksg_core_is_scikit_learns_estimate_unclipped():
    """_ksg is scikit-learn's KSG (its private _compute_mi_cc, the reference) without the clip at 0: on
    independent samples it goes below 0 where scikit-learn says 0, and equals it everywhere else."""
    from sklearn.feature_selection._mutual_info import _compute_mi_cc

    rng = np.random.default_rng(3)
    negative = 0
    for dependence in (0.0, 0.0, 0.0, 0.5, 2.0):
        x = rng.standard_normal(1500)
        y = dependence * x + rng.standard_normal(1500)
        ours = _ksg(x, y, 3)
        assert max(ours, 0.0) == pytest.approx(_compute_mi_cc(x, y, 3), abs=1e-12)
        negative += ours < 0
    assert negative >= 1


def test_ksg_is_near_zero_for_independent_white_noise():
    """16 independent Gaussian white-noise maps, 2000-pixel subsample, unclipped: the mean is within
    0.01 of 0 (seen −0.005) and single maps fall on both sides."""
    rng = np.random.default_rng(5)
    image, maps = rng.standard_normal((SIZE, SIZE)), rng.standard_normal((16, SIZE, SIZE))
    ksg, null = ksg_mi(image, maps)
    assert ksg.shape == (16,) and np.isnan(null).all()
    assert abs(ksg.mean()) < 0.01 and ksg.min() < 0 < ksg.max()


def test_ksg_minus_its_null_removes_the_bias_of_smooth_half_zero_maps():
    """Independent σ = 4 px fields, maps through a ReLU (half their pixels exactly 0, as encoder maps):
    KSG alone finds 0.039 nats that are not there; KSG minus its own shift null is within 0.01 of 0
    (seen 0.004), with ties broken by the jitter."""
    rng = np.random.default_rng(0)
    image = gaussian_filter(rng.standard_normal((SIZE, SIZE)), 4)
    maps = np.stack([np.maximum(gaussian_filter(rng.standard_normal((SIZE, SIZE)), 4), 0) for _ in range(8)])
    assert 0.45 < (maps == 0).mean() < 0.55
    ksg, null = ksg_mi(image, maps, shifts=4)
    assert ksg.mean() > 0.03
    assert abs((ksg - null).mean()) < 0.01


def test_ksg_minus_its_null_keeps_real_dependence_of_half_zero_maps(gray):
    """ReLU maps (58 % zeros) of noisy blurred copies of a real photo (the astronaut): KSG minus its null
    stays above 0.15 for every map (seen KSG 0.19–0.20, null 0.015–0.029: the photo's own long-range
    structure, which a shift cannot fully break)."""
    image = gray[0]
    rng = np.random.default_rng(0)
    maps = np.stack([np.maximum(gaussian_filter(image, 1) - 0.5 + 0.3 * rng.standard_normal(image.shape), 0)
                     for _ in range(4)])
    assert (maps == 0).mean() > 0.5
    ksg, null = ksg_mi(image, maps, shifts=4)
    assert np.all(ksg - null > 0.15)
    assert np.all(np.abs(null) < 0.05)


def test_ksg_ranks_dependence_like_the_plug_in(gray):
    """Noisy copies of each real photo with noise 1.0, 0.3, 0.1 × its sd: KSG and the plug-in
    both strictly increase, and KSG > 0.15 for all."""
    for image in gray:
        maps = noisy_copies(image)
        ksg, plug_in = ksg_mi(image, maps)[0], mutual_information(image, maps, BINS)
        assert np.all(np.diff(ksg) > 0) and np.all(np.diff(plug_in) > 0), (ksg, plug_in)
        assert ksg.min() > 0.15
        assert np.all(ksg_mi(image, dependent_maps(image))[0] > 0.2)


# --- shifts and reproducibility ---------------------------------------------------------------


def test_draw_shifts_are_distinct_and_far(gray):
    """Shifts are distinct and at least S/4 away in each axis (circularly); too many raise."""
    for shape in [(96, 96), (88, 104), (10, 10)]:
        shifts = draw_shifts(shape, 20, seed=3)
        assert shifts.shape == (20, 2)
        assert len({tuple(s) for s in shifts}) == 20
        for axis, side in enumerate(shape):
            distance = np.minimum(shifts[:, axis], side - shifts[:, axis])
            assert distance.min() >= MIN_SHIFT_FRACTION * side
    assert draw_shifts((10, 10), 25, 0).shape == (25, 2)  # d ∈ {3, …, 7}: 5 × 5 shifts in all
    with pytest.raises(ValueError, match="shifts must be 1 … 25"):
        draw_shifts((10, 10), 26, 0)


def test_same_seed_same_numbers_other_seed_other_shifts(gray):
    """Same seed: identical shifts, nulls and KSG; another seed: other shifts and other values."""
    image, maps = gray[1], dependent_maps(gray[1])
    shifts = draw_shifts(image.shape, K_SHIFTS, 0)
    np.testing.assert_array_equal(shifts, draw_shifts(image.shape, K_SHIFTS, 0))
    assert not np.array_equal(shifts, draw_shifts(image.shape, K_SHIFTS, 1))
    corrected = corrected_mi(image, maps, BINS, seed=0)
    np.testing.assert_array_equal(corrected, corrected_mi(image, maps, BINS, seed=0))
    null = spatial_null(image, maps, BINS, seed=0)
    np.testing.assert_array_equal(null, spatial_null(image, maps, BINS, seed=0))
    assert not np.array_equal(null, spatial_null(image, maps, BINS, seed=1))
    np.testing.assert_array_equal(ksg_mi(image, maps, seed=0, shifts=2), ksg_mi(image, maps, seed=0, shifts=2))
    assert not np.array_equal(ksg_mi(image, maps, seed=0, shifts=2)[1], ksg_mi(image, maps, seed=1, shifts=2)[1])


def test_bad_shapes_raise(gray):
    """Maps that are not (K ≥ 1, S, S) raise ValueError in every estimator."""
    image = gray[0]
    for estimator in (miller_madow, spatial_null, corrected_mi, ksg_mi):
        with pytest.raises(ValueError, match="maps must be"):
            estimator(image, image[None, :88, :88])
