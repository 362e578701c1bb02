"""Bias-aware MI estimators next to the plug-in histogram MI of ``mifeatures.mi``.

The plug-in MI of a 30×30 joint histogram is biased upward: for two independent arrays of N
pixels it is about (bins − 1)²/(2N) nats (0.046 at 96×96), and more for spatially smooth
arrays, whose pixels are not independent samples. Three estimates, each (K,) for an image
(S, S) against its maps (K, S, S), in nats:

* ``miller_madow`` — the plug-in MI with the Miller–Madow correction of each entropy; it removes
  the bias for independent pixels but not the extra bias of smooth maps.
* ``corrected_mi`` — the plug-in MI minus ``spatial_null``, the mean plug-in MI of the image
  against circular shifts of each map: a null that keeps both marginals and both fields'
  spatial structure but breaks their alignment.
* ``ksg_mi`` — the Kraskov k-nearest-neighbour estimate on a random subsample of pixel positions,
  with its own circular-shift null: KSG has no spatial correction either, so only KSG minus its null
  is an estimate independent of the histogram's.

Binning is that of ``mi`` (``np.histogram2d``: each array over its own min–max, both in their
common dtype).
"""

from __future__ import annotations

import math

import numpy as np

from mifeatures import mi
from mifeatures.mi import bin_indices, mutual_information, mutual_information_many

K_SHIFTS = 8  # circular shifts averaged by the spatial null
# Smallest circular shift, as a fraction of the image side, in *each* axis. The shift has to
# outrun the range over which map and image are correlated so that the shifted pair is
# independent, while the shift leaves each field's own smoothness (the source of the extra bias)
# intact. A σ = 2 px blur decorrelates within ~3σ (its autocorrelation exp(−d²/4σ²) is e^−36 at
# 24 px); real photos and encoder maps carry structure over tens of pixels, hence S/4 (24 px at
# 96), not a few σ. Each axis rather than Chebyshev distance: a map of a horizon or of stripes
# shifted along them only (dy = 0) still lines up with the image, and such a null would absorb
# real dependence. Distances are circular, min(d, S − d), so d ∈ [S/4, 3S/4]: (S/2 + 1)² = 2401
# shifts to draw from at S = 96.
MIN_SHIFT_FRACTION = 0.25


def miller_madow(image: np.ndarray, maps: np.ndarray, bins: int = 30) -> np.ndarray:
    """Plug-in MI with Miller–Madow-corrected entropies, shape (K,), in nats.

    H_MM = H_plug-in + (m − 1)/(2N), m the number of non-empty bins, for H(X), H(Y) and H(X, Y),
    so MI_MM = MI_plug-in − (m_xy − m_x − m_y + 1)/(2N). It may be negative; a constant image or
    map gives 0, as the plug-in does.

    >>> x = np.array([[0.0, 0.0, 1.0], [1.0, 2.0, 2.0]])
    >>> y = np.array([[0.0, 1.0, 1.0], [2.0, 2.0, 0.0]])
    >>> miller_madow(x, y[None], bins=3).round(6).tolist()  # log 1.5 − (6 − 3 − 3 + 1)/12
    [0.322132]
    """
    plug_in = mutual_information(image, maps, bins)  # also validates bins and shapes
    dtype = mi.histogram_dtype(image.dtype, maps.dtype)  # histogram2d bins both in one dtype
    image_bins = bin_indices(image.astype(dtype, copy=False), bins)
    map_bins = np.stack([bin_indices(m.astype(dtype, copy=False), bins) for m in maps])
    # Where numpy's own edges come out of order, bin_indices gives −1 or bins to the values
    # histogram2d leaves out; leave them out of the counts too.
    kept = (map_bins >= 0) & (map_bins < bins) & (image_bins >= 0) & (image_bins < bins)
    cells = (np.arange(len(maps))[:, None] * bins + image_bins) * bins + map_bins
    counts = np.bincount(cells[kept], minlength=len(maps) * bins * bins).reshape(len(maps), bins, bins)
    m_xy = np.count_nonzero(counts, axis=(1, 2))
    m_x = np.count_nonzero(counts.sum(axis=2), axis=1)
    m_y = np.count_nonzero(counts.sum(axis=1), axis=1)
    total = np.maximum(counts.sum(axis=(1, 2)), 1)
    # A constant image (m_x = 1) has m_xy = m_y, and conversely: the correction is then 0.
    return plug_in - (m_xy - m_x - m_y + 1) / (2 * total)


def draw_shifts(shape: tuple[int, int], shifts: int = K_SHIFTS, seed: int = 0) -> np.ndarray:
    """``shifts`` distinct circular shifts (dy, dx), shape (shifts, 2), each at least
    ``MIN_SHIFT_FRACTION`` of the side in each axis (circular distance), from
    ``np.random.default_rng(seed)``.

    >>> draw_shifts((96, 96), 3, seed=0).shape
    (3, 2)
    """
    axes = []
    for side in shape:
        low = max(1, math.ceil(MIN_SHIFT_FRACTION * side))
        axes.append(np.arange(low, side - low + 1))  # min(d, side − d) ≥ low
    n_candidates = len(axes[0]) * len(axes[1])
    if shifts < 1 or shifts > n_candidates:
        raise ValueError(f"shifts must be 1 … {n_candidates} for a {shape[0]}×{shape[1]} image, got {shifts}")
    pick = np.random.default_rng(seed).choice(n_candidates, size=shifts, replace=False)
    return np.stack([axes[0][pick // len(axes[1])], axes[1][pick % len(axes[1])]], axis=1)


def spatial_null(
    image: np.ndarray, maps: np.ndarray, bins: int = 30, shifts: int = K_SHIFTS, seed: int = 0
) -> np.ndarray:
    """Mean plug-in MI of ``image`` against ``shifts`` circular shifts of each map, shape (K,).

    Every map of the image gets the same shifts, ``draw_shifts(image.shape, shifts, seed)``.
    MI is unchanged when one permutation of the pixels is applied to both arrays, so the image
    is rolled back by each shift instead of rolling all K maps: the numbers are those of
    ``np.roll(maps, (dy, dx), axis=(1, 2))``.

    >>> x = np.random.default_rng(0).random((16, 16))
    >>> bool(spatial_null(x, x[None], bins=4)[0] < mutual_information(x, x[None], bins=4)[0])
    True
    """
    mi.check_maps(image, maps, bins)
    offsets = draw_shifts(image.shape, shifts, seed)
    rolled = [np.roll(image, (-dy, -dx), axis=(0, 1)) for dy, dx in offsets]
    return mutual_information_many(rolled, [maps] * len(rolled), bins).mean(axis=0)


def corrected_mi(
    image: np.ndarray, maps: np.ndarray, bins: int = 30, shifts: int = K_SHIFTS, seed: int = 0
) -> np.ndarray:
    """Plug-in MI minus ``spatial_null``, shape (K,): ≈ 0 for independent maps, smooth or not.

    Not clipped, so it may be slightly negative.

    >>> x = np.random.default_rng(0).random((16, 16))
    >>> float(corrected_mi(x, x[None], bins=4)[0]) > 1.0
    True
    """
    return mutual_information(image, maps, bins) - spatial_null(image, maps, bins, shifts, seed)


def ksg_mi(
    image: np.ndarray, maps: np.ndarray, n_neighbors: int = 3, sample: int = 2000, seed: int = 0,
    shifts: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Kraskov–Stögbauer–Grassberger k-NN MI between the image's pixels and each map's, and its own
    spatial null: (ksg, null), each (K,); null is the mean KSG MI against ``shifts`` circular shifts of
    each map (``draw_shifts``, as ``spatial_null`` draws them), NaN when ``shifts`` is 0.

    On ``sample`` pixel positions drawn without replacement by ``np.random.default_rng(seed)``, the
    same for every map and shift (all pixels if fewer). Each variable is scaled to unit SD and gets
    N(0, KSG_JITTER²) noise (seeded), which breaks its ties; the estimate (KSG's first, with
    scikit-learn's neighbour searches) is not clipped at 0, so that the null subtracts without bias.

    >>> x = np.random.default_rng(0).random((32, 32))
    >>> bool(ksg_mi(x, np.stack([x ** 2, np.random.default_rng(1).random((32, 32))]), sample=500)[0][0] > 1)
    True
    """
    if maps.ndim != 3 or maps.shape[1:] != image.shape or maps.shape[0] == 0:
        raise ValueError(f"maps must be (K ≥ 1, {image.shape[0]}, {image.shape[1]}), got {maps.shape}")
    if sample < n_neighbors + 1:
        raise ValueError(f"sample must exceed n_neighbors ({n_neighbors}), got {sample}")
    rng = np.random.default_rng(seed)
    positions = rng.choice(image.size, size=min(sample, image.size), replace=False)
    offsets = draw_shifts(image.shape, shifts, seed) if shifts else np.zeros((0, 2), int)
    # The null rolls the image back instead of each map forward, as spatial_null does: the same pairs.
    references = [image, *(np.roll(image, (-dy, -dx), axis=(0, 1)) for dy, dx in offsets)]
    targets = [_jittered(reference.reshape(-1)[positions], rng) for reference in references]
    estimates = np.array([[_ksg(target, _jittered(m.reshape(-1)[positions], rng), n_neighbors)
                           for target in targets] for m in maps])
    return estimates[:, 0], estimates[:, 1:].mean(axis=1) if shifts else np.full(len(maps), np.nan)


# Ties break KSG's neighbour counts: a ReLU map is 0 at about half its pixels, and grey levels are
# multiples of 1/765 of the range. Kraskov et al. break them with low-amplitude noise; its SD here,
# in units of the variable's SD, is far below the grey levels' spacing (about 0.005 SD) and far above
# rounding (scikit-learn adds 1e-10, which leaves ties within rounding of each other).
KSG_JITTER = 1e-3


def _jittered(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``values`` scaled to unit SD (a constant left as is) plus N(0, KSG_JITTER²) noise, in float64."""
    values = values.astype(np.float64)
    sd = values.std()
    return (values / sd if sd > 0 else values) + KSG_JITTER * rng.standard_normal(values.shape)


def _ksg(x: np.ndarray, y: np.ndarray, n_neighbors: int) -> float:
    """KSG estimate 1 of MI(x; y) in nats for 1-D samples without ties, max-norm neighbours, unclipped:
    ψ(N) + ψ(k) − ⟨ψ(n_x + 1)⟩ − ⟨ψ(n_y + 1)⟩, n_x and n_y the points strictly within each point's
    distance to its k-th joint neighbour, as scikit-learn computes it."""
    from scipy.special import digamma
    from sklearn.neighbors import KDTree, NearestNeighbors  # imported here: slow to import

    joint = np.column_stack([x, y])
    radius = NearestNeighbors(metric="chebyshev", n_neighbors=n_neighbors).fit(joint).kneighbors()[0][:, -1]
    radius = np.nextafter(radius, 0)
    counts = [KDTree(v[:, None], metric="chebyshev").query_radius(v[:, None], radius, count_only=True) - 1.0
              for v in (x, y)]
    return float(digamma(len(x)) + digamma(n_neighbors) - sum(np.mean(digamma(n + 1)) for n in counts))
