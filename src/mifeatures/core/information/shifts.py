"""Circular shifts for spatial nulls: far enough in each axis to break a map's alignment with its image,
the same draw for every map of a job."""

from __future__ import annotations

import math

import numpy as np

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
