"""Plug-in mutual information from a joint histogram, vectorised over feature maps.

The numbers are those of ``np.histogram2d(x, y, bins)`` (each axis over its own min–max)
followed by ``sklearn.metrics.mutual_info_score`` on the counts, in nats; the tests hold
them to that reference to 1e-9.
"""

from __future__ import annotations

import numpy as np


def bin_indices(values: np.ndarray, bins: int) -> np.ndarray:
    """0-based histogram bin of every value, exactly as ``np.histogram`` bins it.

    Like numpy, a constant array is binned over [v − 0.5, v + 0.5] and the maximum falls
    into the last bin.

    >>> bin_indices(np.array([0.0, 0.49, 0.5, 1.0]), 2).tolist()
    [0, 0, 1, 1]
    """
    values = values.ravel()
    low, high = values.min(), values.max()
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    index = np.searchsorted(edges, values, side="right")
    index[values == edges[-1]] -= 1
    return index - 1


def mutual_information(image: np.ndarray, maps: np.ndarray, bins: int = 30) -> np.ndarray:
    """MI in nats between ``image`` (S, S) and each of ``maps`` (K, S, S); returns shape (K,).

    >>> x = np.tile([0.0, 1.0], 50).reshape(10, 10)
    >>> mutual_information(x, np.stack([x, np.zeros_like(x)]), bins=2).round(6).tolist()
    [0.693147, 0.0]
    """
    if bins < 2:
        raise ValueError(f"bins must be ≥ 2, got {bins}")
    if maps.ndim != 3 or maps.shape[1:] != image.shape or maps.shape[0] == 0:
        raise ValueError(f"maps must be (K ≥ 1, {image.shape[0]}, {image.shape[1]}), got {maps.shape}")
    n_maps, n_pixels = maps.shape[0], image.size
    image_bins = bin_indices(image, bins)
    joint_index = np.concatenate(
        [k * bins * bins + image_bins * bins + bin_indices(feature, bins) for k, feature in enumerate(maps)]
    )
    counts = np.bincount(joint_index, minlength=n_maps * bins * bins).reshape(n_maps, bins, bins)
    return _plug_in_mi(counts.astype(np.float64), n_pixels)


def _plug_in_mi(counts: np.ndarray, total: int) -> np.ndarray:
    """Σ p(i,j) log(p(i,j) / (p(i) p(j))) for each (bins, bins) table in ``counts``."""
    rows = counts.sum(axis=2, keepdims=True)
    cols = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = counts / total * np.log(counts * total / (rows * cols))
    mi = np.where(counts > 0, terms, 0.0).sum(axis=(1, 2))
    return np.clip(mi, 0.0, None)
