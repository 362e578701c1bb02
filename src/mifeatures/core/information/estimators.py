"""Bias-aware MI estimators next to the plug-in histogram MI of ``mifeatures.core.information.mi``.

The plug-in MI of a 30×30 joint histogram is biased upward: for two independent arrays of N
pixels it is about (bins − 1)²/(2N) nats (0.046 at 96×96), and more for spatially smooth
arrays, whose pixels are not independent samples. Three estimates, each (K,) for an image
(S, S) against its maps (K, S, S), in nats:

* ``miller_madow`` — the plug-in MI with the Miller–Madow correction of each entropy; it removes
  the bias for independent pixels but not the extra bias of smooth maps.
* ``corrected_mi`` — the plug-in MI minus ``spatial_null``, the mean plug-in MI of the image
  against circular shifts of each map: a null that keeps both marginals and both fields'
  spatial structure but breaks their alignment.
(``mifeatures.core.information.ksg`` is the k-nearest-neighbour estimate, with a null of its own.)

Binning is that of ``mi`` (``np.histogram2d``: each array over its own min–max, both in their
common dtype).
"""

from __future__ import annotations

import numpy as np

from mifeatures.core.information import mi
from mifeatures.core.information.mi import bin_indices, mutual_information, mutual_information_many
from mifeatures.core.information.shifts import K_SHIFTS, draw_shifts


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
