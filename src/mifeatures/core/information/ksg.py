"""Kraskov–Stögbauer–Grassberger k-nearest-neighbour MI with its own circular-shift null: the cross-check's
estimator, independent of the histogram. KSG has no spatial correction either, so only KSG minus its
null is comparable with the histogram's null-corrected MI."""

from __future__ import annotations

import numpy as np

from mifeatures.core.information.shifts import draw_shifts


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
