"""Plug-in mutual information from a joint histogram, vectorised over feature maps and images.

The numbers are those of ``np.histogram2d(x, y, bins)`` (each axis over its own min–max)
followed by ``sklearn.metrics.mutual_info_score`` on the counts, in nats; the tests hold
them to that reference to 1e-9.

Speed comes from binning by arithmetic instead of a search (``mifeatures.core.information.binning``), fused with
the count into one compiled pass over each map, and from MI as sums
of n·log n looked up in a table. Whatever does not grow with the pixels (edges, the MI from
the counts) is done once for many images by ``mutual_information_many``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from mifeatures.core.information.binning import COMPILED_DTYPES, RowBinner, bin_and_count

# Images per call of the vectorised core in mutual_information_many.
_IMAGES_PER_CALL = 8


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
    binner = RowBinner(rows.min(axis=1), rows.max(axis=1), bins)
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
    return _mutual_information(pixels, [binned_as(maps.reshape(len(maps), -1), dtype)], bins)[0]


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


def binned_as(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` to bin in ``dtype``'s arithmetic: as they are where the compiled binning takes them and each
    converts to ``dtype`` exactly (float32 maps against float64 images: numba computes in float64, every bin
    as for a float64 copy), else converted. The copy was a third of the scoring's time an image.

    >>> binned_as(np.zeros(3, np.float32), np.dtype(np.float64)).dtype
    dtype('float32')
    """
    exact = values.dtype in COMPILED_DTYPES and dtype in COMPILED_DTYPES and np.can_cast(values.dtype, dtype, "safe")
    return values if exact else values.astype(dtype)


def _mutual_information_pairs(
    pairs: list[tuple[np.ndarray, np.ndarray]], dtype: np.dtype, bins: int
) -> np.ndarray:
    """``_mutual_information`` of (image, maps) pairs of equal sizes, binned in ``dtype``."""
    images = np.stack([image.reshape(-1) for image, _ in pairs]).astype(dtype, copy=False)
    maps = [binned_as(image_maps.reshape(len(image_maps), -1), dtype) for _, image_maps in pairs]
    return _mutual_information(images, maps, bins)


def _mutual_information(images: np.ndarray, maps: Sequence[np.ndarray], bins: int) -> np.ndarray:
    """MI (B, K) of each of ``images`` (B, N) against its maps ``maps[b]`` (K, N), binned in the images'
    dtype (``binned_as``)."""
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


def _joint_counts(images: np.ndarray, maps: Sequence[np.ndarray], bins: int) -> tuple[np.ndarray, RowBinner]:
    """``np.histogram2d``'s table of each image of ``images`` (B, N) against each of its maps
    ``maps[b]`` (K, N), binned in the images' dtype: shape (B, K, bins, bins); and the binner of the rows
    (the B images, then the B·K maps, image by image). Rows it calls irregular get a table in
    range but not numpy's."""
    n_images, n_pixels = images.shape
    n_maps = len(maps[0])
    binner = RowBinner(
        np.concatenate([images.min(axis=1), *(image_maps.min(axis=1) for image_maps in maps)]),
        np.concatenate([images.max(axis=1), *(image_maps.max(axis=1) for image_maps in maps)]),
        bins,
    )
    image_bins = binner.bin(images, 0, np.empty(images.shape, np.intp))
    counts = np.zeros((n_images, n_maps, bins * bins), np.intp)
    compiled = images.dtype in COMPILED_DTYPES
    for image, (pixel_bins, image_maps) in enumerate(zip(image_bins, maps)):
        joint_offsets = pixel_bins * bins
        rows = slice(n_images + image * n_maps, n_images + (image + 1) * n_maps)
        if compiled:
            bin_and_count(
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


@lru_cache(maxsize=8)
def _n_log_n(total: int) -> np.ndarray:
    """n·log n for n = 0 … total (0 for n = 0), read-only."""
    n = np.arange(total + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        table = n * np.log(n)
    table[0] = 0.0
    table.flags.writeable = False
    return table
