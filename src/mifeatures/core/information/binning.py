"""Binning as ``np.histogram2d`` bins, by arithmetic instead of a search: ``RowBinner`` for rows of values
each over its own min–max, and ``bin_and_count``, the same binning fused with the joint count in one
compiled pass (numba). ``mifeatures.core.information.mi`` builds its histograms with them; the tests hold every bin to
numpy's.
"""

from __future__ import annotations

import numba
import numpy as np

# The dtypes the compiled binning is built for; others (float16, longdouble) are binned by numpy.
COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Half-width, in bins, of the band around each bin edge inside which a value is binned by
# comparing it with the edges themselves rather than by arithmetic.
EDGE_BAND = 2.0**-10


class RowBinner:
    """Bins rows of values, each over its own range ``low[r]`` … ``high[r]`` (its min–max),
    exactly as ``np.histogram2d`` bins them, in the dtype of ``low``.

    numpy searches the edges ``linspace(low, high, bins + 1)``: a value's bin is the number of
    interior edges ≤ it. Here g = value · scale is computed once and the bin read off as
    trunc(g − shift). g is monotone in the value, so a value is surely above edge k when g
    exceeds g(edge k). Two shifts that bracket every edge's g(edge k) − k give two bins per
    value: where they agree, that is numpy's bin (the inequalities this needs are checked on
    the edges, in the same arithmetic); the few values near an edge, where they differ, are
    compared with the edges directly.
    """

    def __init__(self, low: np.ndarray, high: np.ndarray, bins: int):
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError(f"autodetected range of [{low.min()}, {high.max()}] is not finite")
        self.constant = low == high
        low, high = np.where(self.constant, low - 0.5, low), np.where(self.constant, high + 0.5, high)
        edges = linspace_rows(low, high, bins)
        dtype = edges.dtype
        # Edge indices, exact in float32 (float16 would not hold large ones).
        lattice = np.arange(bins + 1, dtype=np.result_type(dtype, np.float32))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            scale = (bins / (high - low))[:, None]
            edge_g = edges * scale
            offset = edge_g - lattice  # how far each edge's g is from its index
            tolerance = EDGE_BAND + 4 * bins * np.finfo(dtype).eps
            shift_up = (offset.max(axis=1, keepdims=True) + tolerance).astype(dtype)
            shift_down = (offset.min(axis=1, keepdims=True) - tolerance).astype(dtype)
            below_edges, above_edges = edge_g - shift_up, edge_g - shift_down
            # Where these fail (a range tiny next to its values, or an overflowing scale), the
            # arithmetic proves nothing and the row falls back to numpy's search.
            provable = (
                (below_edges[:, 0] > -1)
                & (below_edges[:, 1:] < lattice[1:]).all(axis=1)
                & (above_edges[:, :-1] >= lattice[:-1]).all(axis=1)
                & (above_edges[:, -1] < bins + 1)
                # So that the two bins differ by at most one: a narrow band, and values up to
                # bins + 1 held to within 1/16 (float16 cannot from 64 bins on).
                & (shift_up - shift_down < 0.5)[:, 0]
                & (bins * np.finfo(dtype).eps < 2**-4)
            )
        self.unprovable = np.flatnonzero(~provable)
        # Edges out of order (from a subnormal step) make numpy's search, hence its histogram,
        # depend on how bisection meets them. Such rows are never provable.
        self.irregular = np.zeros(len(edges), bool)
        if self.unprovable.size:
            self.irregular[self.unprovable] = ~(np.diff(edges[self.unprovable], axis=1) >= 0).all(axis=1)
            # Harmless numbers for the rows that fall back, so that the arithmetic warns of nothing.
            scale, shift_up, shift_down = (
                np.where(provable[:, None], x, 0) for x in (scale, shift_up, shift_down)
            )
        self.scale, self.shift_up, self.shift_down = scale, shift_up, shift_down
        self.bins, self.edges = bins, edges
        # Each bin's upper edge; the last bin has none, as it holds the maximum.
        self.upper_edges = np.concatenate([edges[:, 1:-1], np.full((len(edges), 1), np.inf, dtype)], axis=1)

    def bin(self, rows: np.ndarray, first: int, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (m, N), of an integer dtype, with the bins of ``rows`` (m, N), the rows
        first … first + m − 1 of this binner."""
        near_edge = self.guess(rows, first, out)
        rows_of = first + near_edge // rows.shape[1]
        np.put(out, near_edge, self.exact(rows.reshape(-1)[near_edge], rows_of, out.reshape(-1)[near_edge]))
        return out

    def guess(self, rows: np.ndarray, first: int, out: np.ndarray) -> np.ndarray:
        """Like ``bin``, but return the flat positions of the values near an edge: there ``out``
        holds numpy's bin or one less, and ``exact`` gives numpy's. Irregular rows get bins in
        range but not numpy's."""
        last = first + len(rows)
        upper = np.empty_like(out)
        g = rows * self.scale[first:last]
        np.subtract(g, self.shift_up[first:last], out=out, casting="unsafe")
        np.subtract(g, self.shift_down[first:last], out=upper, casting="unsafe")
        if self.unprovable.size:
            for row in self.unprovable[(self.unprovable >= first) & (self.unprovable < last)]:
                in_range = np.clip(self.search(rows[row - first], row), 0, self.bins - 1)
                out[row - first] = upper[row - first] = in_range
        return np.flatnonzero(out != upper)

    def exact(self, values: np.ndarray, row: np.ndarray, guess: np.ndarray) -> np.ndarray:
        """numpy's bin of each of ``values`` (n,), of provable rows ``row`` (n,), given the bin
        ``guess`` gave it."""
        return guess + (values >= self.upper_edges[row, guess])

    def search(self, values: np.ndarray, row: int) -> np.ndarray:
        """numpy's bins of ``values`` of one row, found as histogram2d finds them: a search of
        the edges, the maximum moved into the last bin."""
        edges = self.edges[row]
        index = np.searchsorted(edges, values, side="right") - 1
        index[values == edges[-1]] -= 1
        return index


def linspace_rows(low: np.ndarray, high: np.ndarray, bins: int) -> np.ndarray:
    """``np.linspace(low[m], high[m], bins + 1)`` for every row m, bit for bit, shape (M, bins + 1)."""
    if ((high - low) / bins == 0).any():
        # A zero step sends linspace down another formula for all rows at once; keep it per row.
        return np.stack([np.linspace(lo, hi, bins + 1) for lo, hi in zip(low, high)])
    return np.linspace(low, high, bins + 1, axis=1)


# Compiled once per process (a fresh process's first MI takes 1.4–1.7 s on this project's CPU machine):
# numba's on-disk cache is not safe for parallel jobs compiling at once (numba#10128, numba#10434).
@numba.njit
def bin_and_count(joint_offsets, maps, scale, shift_up, shift_down, upper_edges, counts):
    """Add to ``counts[k, joint_offsets[n] + bin]`` one for each value n of map k: ``RowBinner.bin``
    fused with the count. The arithmetic is numpy's, in the binner's dtype (float32 maps are promoted
    value by value, exactly, against float64 parameters): numba contracts no multiply-add unless asked to
    (fastmath), so the binner's proofs hold here too.

    The two truncations run as one vectorised pass; the rare values where they differ, near an
    edge, are then compared with the edge in the counting pass, as ``RowBinner.exact`` does.
    """
    n_pixels = maps.shape[1]
    below, above = np.empty(n_pixels, np.int32), np.empty(n_pixels, np.int32)
    for map_index in range(maps.shape[0]):
        values, map_counts, edges = maps[map_index], counts[map_index], upper_edges[map_index]
        scale_k, up, down = scale[map_index], shift_up[map_index], shift_down[map_index]
        for n in range(n_pixels):
            g = values[n] * scale_k
            below[n] = np.int32(g - up)
            above[n] = np.int32(g - down)
        for n in range(n_pixels):
            bin_index = below[n]
            if bin_index != above[n]:
                bin_index += values[n] >= edges[bin_index]
            map_counts[joint_offsets[n] + bin_index] += 1
