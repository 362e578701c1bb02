"""Plug-in mutual information from a joint histogram, vectorised over feature maps and images.

The numbers are those of ``np.histogram2d(x, y, bins)`` (each axis over its own min–max)
followed by ``sklearn.metrics.mutual_info_score`` on the counts, in nats; the tests hold
them to that reference to 1e-9.

Speed comes from binning by arithmetic instead of a search (see ``_RowBinner``), fused with
the count into one compiled pass over each map (``_bin_and_count``, numba), and from MI as sums
of n·log n looked up in a table. Whatever does not grow with the pixels (edges, the MI from
the counts) is done once for many images by ``mutual_information_many``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import numba
import numpy as np

# The dtypes the compiled binning is built for; others (float16, longdouble) are binned by numpy.
_COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Images per call of the vectorised core in mutual_information_many.
_IMAGES_PER_CALL = 8
# Half-width, in bins, of the band around each bin edge inside which a value is binned by
# comparing it with the edges themselves rather than by arithmetic.
_EDGE_BAND = 2.0**-10


def bin_indices(values: np.ndarray, bins: int) -> np.ndarray:
    """0-based histogram bin of every value, exactly as ``np.histogram2d`` (and ``np.histogram``)
    bins it.

    Like numpy, a constant array is binned over [v − 0.5, v + 0.5] and the maximum falls
    into the last bin. Where numpy's own edges come out of order (a range of a few subnormal
    steps), its search may return −1 or ``bins``, values histogram2d then leaves out; so does this.

    >>> bin_indices(np.array([0.0, 0.49, 0.5, 1.0]), 2).tolist()
    [0, 0, 1, 1]
    """
    rows = values.reshape(1, -1).astype(histogram_dtype(values.dtype), copy=False)
    binner = _RowBinner(rows.min(axis=1), rows.max(axis=1), bins)
    if binner.irregular[0]:
        return binner.search(rows[0], 0)
    return binner.bin(rows, 0, np.empty(rows.shape, np.intp))[0]


def mutual_information(image: np.ndarray, maps: np.ndarray, bins: int = 30) -> np.ndarray:
    """MI in nats between ``image`` (S, S) and each of ``maps`` (K, S, S); returns shape (K,).

    >>> x = np.tile([0.0, 1.0], 50).reshape(10, 10)
    >>> mutual_information(x, np.stack([x, np.zeros_like(x)]), bins=2).round(6).tolist()
    [0.693147, 0.0]
    """
    check_maps(image, maps, bins)
    # histogram2d stacks the two axes into one array, so both are binned in their common dtype.
    dtype = histogram_dtype(image.dtype, maps.dtype)
    pixels = image.reshape(1, -1).astype(dtype, copy=False)
    return _mutual_information(pixels, [maps.reshape(len(maps), -1).astype(dtype, copy=False)], bins)[0]


def mutual_information_many(
    images: Iterable[np.ndarray], maps: Iterable[np.ndarray], bins: int = 30
) -> np.ndarray:
    """MI of each image (S, S) against its own maps (K, S, S), for B images: shape (B, K).

    Row b equals ``mutual_information(images[b], maps[b], bins)``. Pairs are consumed a few at
    a time, so ``maps`` may be a generator that computes each image's maps on demand: memory
    then stays that of a few images' maps however many images there are. Arrays (B, S, S) and
    (B, K, S, S) work too.

    >>> x = np.tile([0.0, 1.0], 50).reshape(10, 10)
    >>> mutual_information_many([x, 1 - x], (np.stack([i, np.ones_like(i)]) for i in [x, x]), bins=2)
    array([[0.69314718, 0.        ],
           [0.69314718, 0.        ]])
    """
    results, chunk, chunk_key, n_maps = [], [], None, None
    for image, image_maps in zip(images, maps, strict=True):
        check_maps(image, image_maps, bins)
        n_maps = n_maps or len(image_maps)
        if len(image_maps) != n_maps:
            raise ValueError(f"every image needs as many maps as the first ({n_maps}), got {len(image_maps)}")
        # One call bins all its values in one dtype, so a run of pairs of another dtype or
        # size starts a new call.
        key = (histogram_dtype(image.dtype, image_maps.dtype), image.size)
        if chunk and (key != chunk_key or len(chunk) == _IMAGES_PER_CALL):
            results.append(_mutual_information_pairs(chunk, chunk_key[0], bins))
            chunk = []
        chunk.append((image, image_maps))
        chunk_key = key
    if chunk:
        results.append(_mutual_information_pairs(chunk, chunk_key[0], bins))
    if not results:
        raise ValueError("no images")
    return np.concatenate(results)


def noise_bound(image: np.ndarray, index: int, seed: int, bins: int) -> float:
    """MI between ``image`` and N(0, 1) noise seeded by (seed, image index), so it is reproducible."""
    noise = np.random.default_rng([seed, index]).standard_normal(image.shape)
    return float(mutual_information(image, noise[None], bins)[0])


def check_maps(image: np.ndarray, maps: np.ndarray, bins: int) -> None:
    """Raise ValueError unless bins ≥ 2 and maps is (K ≥ 1, *image.shape)."""
    if bins < 2:
        raise ValueError(f"bins must be ≥ 2, got {bins}")
    if maps.ndim != 3 or maps.shape[1:] != image.shape or maps.shape[0] == 0:
        raise ValueError(f"maps must be (K ≥ 1, {image.shape[0]}, {image.shape[1]}), got {maps.shape}")


def histogram_dtype(*dtypes: np.dtype) -> np.dtype:
    """The dtype numpy's histograms compute edges in: the inputs' common type, float64 for integers."""
    dtype = np.result_type(*dtypes)
    return dtype if np.issubdtype(dtype, np.inexact) else np.dtype(np.float64)


def _mutual_information_pairs(
    pairs: list[tuple[np.ndarray, np.ndarray]], dtype: np.dtype, bins: int
) -> np.ndarray:
    """``_mutual_information`` of (image, maps) pairs of equal sizes, binned in ``dtype``."""
    images = np.stack([image.reshape(-1) for image, _ in pairs]).astype(dtype, copy=False)
    maps = [image_maps.reshape(len(image_maps), -1).astype(dtype, copy=False) for _, image_maps in pairs]
    return _mutual_information(images, maps, bins)


def _mutual_information(images: np.ndarray, maps: Sequence[np.ndarray], bins: int) -> np.ndarray:
    """MI (B, K) of each of ``images`` (B, N) against its maps ``maps[b]`` (K, N), all of one dtype."""
    n_images, n_maps = len(images), len(maps[0])
    counts, binner = _joint_counts(images, maps, bins)
    mi = _plug_in_mi(counts, images.shape[1])
    # sklearn's MI is exactly 0 when a variable takes a single value.
    mi[binner.constant[n_images:].reshape(n_images, n_maps)] = 0.0
    mi[binner.constant[:n_images]] = 0.0
    irregular = binner.irregular[n_images:].reshape(n_images, n_maps) | binner.irregular[:n_images, None]
    for image, map_index in np.argwhere(irregular):
        mi[image, map_index] = _histogram2d_mi(images[image], maps[image][map_index], bins)
    return mi


def _joint_counts(images: np.ndarray, maps: Sequence[np.ndarray], bins: int) -> tuple[np.ndarray, _RowBinner]:
    """``np.histogram2d``'s table of each image of ``images`` (B, N) against each of its maps
    ``maps[b]`` (K, N), all of one dtype: shape (B, K, bins, bins); and the binner of the rows
    (the B images, then the B·K maps, image by image). Rows it calls irregular get a table in
    range but not numpy's."""
    n_images, n_pixels = images.shape
    n_maps = len(maps[0])
    binner = _RowBinner(
        np.concatenate([images.min(axis=1), *(image_maps.min(axis=1) for image_maps in maps)]),
        np.concatenate([images.max(axis=1), *(image_maps.max(axis=1) for image_maps in maps)]),
        bins,
    )
    image_bins = binner.bin(images, 0, np.empty(images.shape, np.intp))
    counts = np.zeros((n_images, n_maps, bins * bins), np.intp)
    compiled = images.dtype in _COMPILED_DTYPES
    for image, (pixel_bins, image_maps) in enumerate(zip(image_bins, maps)):
        joint_offsets = pixel_bins * bins
        rows = slice(n_images + image * n_maps, n_images + (image + 1) * n_maps)
        if compiled:
            _bin_and_count(
                joint_offsets, image_maps, binner.scale[rows, 0], binner.shift_up[rows, 0],
                binner.shift_down[rows, 0], binner.upper_edges[rows], counts[image],
            )  # fmt: skip
            # The compiled binning holds only on provable rows; numpy's search bins the others.
            unprovable = binner.unprovable
            searched = unprovable[(unprovable >= rows.start) & (unprovable < rows.stop)] - rows.start
        else:
            searched = range(n_maps)
        for map_index in searched:
            map_row = image_maps[map_index][None]
            map_bins = binner.bin(map_row, rows.start + map_index, np.empty(map_row.shape, np.intp))[0]
            counts[image, map_index] = np.bincount(joint_offsets + map_bins, minlength=bins * bins)
    return counts.reshape(n_images, n_maps, bins, bins), binner


def _histogram2d_mi(x: np.ndarray, y: np.ndarray, bins: int) -> float:
    """MI of numpy's own histogram2d table: for edges numpy builds out of order, where its
    search may leave values out of the table."""
    table = np.histogram2d(x, y, bins)[0].astype(np.intp)
    if np.count_nonzero(table.any(axis=1)) < 2 or np.count_nonzero(table.any(axis=0)) < 2:
        return 0.0
    return float(_plug_in_mi(table[None, None], int(table.sum()))[0, 0])


class _RowBinner:
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
        edges = _linspace_rows(low, high, bins)
        dtype = edges.dtype
        # Edge indices, exact in float32 (float16 would not hold large ones).
        lattice = np.arange(bins + 1, dtype=np.result_type(dtype, np.float32))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            scale = (bins / (high - low))[:, None]
            edge_g = edges * scale
            offset = edge_g - lattice  # how far each edge's g is from its index
            tolerance = _EDGE_BAND + 4 * bins * np.finfo(dtype).eps
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


def _linspace_rows(low: np.ndarray, high: np.ndarray, bins: int) -> np.ndarray:
    """``np.linspace(low[m], high[m], bins + 1)`` for every row m, bit for bit, shape (M, bins + 1)."""
    if ((high - low) / bins == 0).any():
        # A zero step sends linspace down another formula for all rows at once; keep it per row.
        return np.stack([np.linspace(lo, hi, bins + 1) for lo, hi in zip(low, high)])
    return np.linspace(low, high, bins + 1, axis=1)


def _plug_in_mi(counts: np.ndarray, total: int) -> np.ndarray:
    """MI of each joint histogram of ``counts`` (image, map, image bin, map bin): shape (image, map).

    Σ p(i,j) log(p(i,j) / (p(i) p(j))) as (1/N)[Σ n_ij log n_ij − Σ a_i log a_i − Σ b_j log b_j
    + N log N], clipped at 0 as sklearn does.
    """
    n_log_n = _n_log_n(total)
    joint = np.take(n_log_n, counts).sum(axis=2).sum(axis=-1)
    # Any map's row sums are its image's counts.
    image_part = np.take(n_log_n, counts[:, 0].sum(axis=-1)).sum(axis=-1)
    map_part = np.take(n_log_n, counts.sum(axis=2)).sum(axis=-1)
    return np.clip((joint - image_part[:, None] - map_part + n_log_n[total]) / total, 0.0, None)


# Compiled once per process (about 0.3 s a dtype): numba's on-disk cache is not safe for
# parallel jobs compiling at once (numba#10128, numba#10434).
@numba.njit
def _bin_and_count(joint_offsets, maps, scale, shift_up, shift_down, upper_edges, counts):
    """Add to ``counts[k, joint_offsets[n] + bin]`` one for each value n of map k: ``_RowBinner.bin``
    fused with the count. The arithmetic is numpy's, in the maps' own dtype: numba contracts no
    multiply-add unless asked to (fastmath), so the binner's proofs hold here too.

    The two truncations run as one vectorised pass; the rare values where they differ, near an
    edge, are then compared with the edge in the counting pass, as ``_RowBinner.exact`` does.
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


@lru_cache(maxsize=8)
def _n_log_n(total: int) -> np.ndarray:
    """n·log n for n = 0 … total (0 for n = 0), read-only."""
    n = np.arange(total + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        table = n * np.log(n)
    table[0] = 0.0
    table.flags.writeable = False
    return table
