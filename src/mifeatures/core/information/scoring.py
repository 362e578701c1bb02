"""The faithful protocol's scoring: the article's MI between each image and each of its 32 feature maps.

The article normalised the maps two ways before the histogram, and both are kept:
- its per-image figures (images 10 and 11) min–max scaled each map on its own, which leaves
  the histogram, hence the MI, unchanged: column ``mi`` of the per-map table;
- its loop over all images took min and max over axes (0, 1, 2) of the NCHW maps, that is per
  image column, jointly over the 32 maps and all rows. That changes the MI: column
  ``mi_all_images``, from which the per-image summary (and so every all-images figure) is made,
  as the article's per-case ``*_MI.npy`` arrays were.
The helpers that run an estimate chunk by chunk with the bounds, and lay out the tables, serve the
corrected protocol's scoring (``mifeatures.core.information.corrected_scoring``) too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from mifeatures.core.information.maps import batched_feature_maps, per_image_encoder
from mifeatures.core.information.mi import mutual_information, mutual_information_many, noise_bound
from mifeatures.core.networks.shapes import N_MAPS

SUMMARY_COLUMNS = ["image", "upper", "noise", "max", "min", "mean", "std"]


def all_images_loop_normalisation(maps: np.ndarray) -> np.ndarray:
    """The article's all-images loop: ``(M - M.min((0,1,2))) / (M.max((0,1,2)) - M.min((0,1,2)) + 1e-8)``
    on the (1, 32, H, W) maps, in their float32; one scale per image column, shared by all maps.

    >>> all_images_loop_normalisation(np.array([[[0, 2], [1, 4]], [[1, 0], [0, 8]]], np.float32)).tolist()
    [[[0.0, 0.25], [1.0, 0.5]], [[1.0, 0.0], [0.0, 1.0]]]
    """
    low = maps.min(axis=(0, 1), keepdims=True)
    return (maps - low) / (maps.max(axis=(0, 1), keepdims=True) - low + np.float32(1e-8))


def image_bounds(images: np.ndarray, indices, bins: int, noise_seed: int) -> dict[str, np.ndarray]:
    """Each image's upper bound MI(img, img) and noise bound (``mi.noise_bound``, seeded by its index)."""
    return {"upper": np.array([mutual_information(image, image[None], bins)[0] for image in images]),
            "noise": np.array([noise_bound(image, index, noise_seed, bins) for image, index in zip(images, indices)])}


def in_chunks(estimates, images: np.ndarray, batch_size: int, bins: int, noise_seed: int
               ) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Run ``estimates(chunk)`` (a tuple of (B, K) MI arrays) chunk by chunk over ``images``, whose
    upper and noise bounds come with them; return the estimates joined over all images, and the bounds.
    Only one chunk's maps exist at a time."""
    parts, bounds = [], []
    with tqdm(total=len(images), desc="score", mininterval=5, unit="image") as progress:
        for start in range(0, len(images), batch_size):
            chunk = slice(start, start + batch_size)
            parts.append(estimates(chunk))
            bounds.append(image_bounds(images[chunk], range(start, start + len(images[chunk])), bins, noise_seed))
            progress.update(len(images[chunk]))
    return ([np.concatenate(arrays) for arrays in zip(*parts)],
            {name: np.concatenate([part[name] for part in bounds]) for name in ("upper", "noise")})


def per_map_table(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per (image, map) from (N, K) arrays."""
    n_images = len(next(iter(columns.values())))
    return pd.DataFrame({"image": np.repeat(np.arange(n_images), N_MAPS), "map": np.tile(np.arange(N_MAPS), n_images),
                         **{name: values.ravel() for name, values in columns.items()}})


def spread(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per image (row): max, min, mean and std over the maps."""
    return {"max": values.max(axis=1), "min": values.min(axis=1), "mean": values.mean(axis=1),
            "std": values.std(axis=1)}


def score(
    encoder: torch.nn.Module, encoder_images: np.ndarray, sized_images: np.ndarray, bins: int,
    noise_seed: int, device: torch.device | str = "cpu", batch_size: int = 8,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-map MI table (image, map, mi, mi_all_images) and per-image summary (SUMMARY_COLUMNS, over
    ``mi_all_images`` as the article's all-images loop) for every image.

    The encoder runs on ``device``, ``batch_size`` images per forward pass; a chunk's maps are
    dropped once its MI is known, so memory does not grow with the number of images. On a CPU,
    batches beyond a few images are slower: their activations no longer fit in cache.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if len(encoder_images) != len(sized_images):
        raise ValueError(f"{len(encoder_images)} encoder images but {len(sized_images)} sized images")
    per_image = per_image_encoder(encoder, torch.device(device))

    def estimates(chunk: slice) -> tuple[np.ndarray, ...]:
        maps = batched_feature_maps(per_image, encoder_images[chunk])
        images = sized_images[chunk]
        return (mutual_information_many(images, maps, bins),
                mutual_information_many(images, map(all_images_loop_normalisation, maps), bins))

    (mi, loop), bounds = in_chunks(estimates, sized_images, batch_size, bins, noise_seed)
    table = per_map_table({"mi": mi, "mi_all_images": loop})
    summary = pd.DataFrame({"image": np.arange(len(loop)), **bounds, **spread(loop)})
    return table, summary


def score_images(encoder: torch.nn.Module, case: str, encoder_images: np.ndarray, sized_images: np.ndarray,
                 bins: int, noise_seed: int, device: torch.device, batch_size: int,
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The score stage's call, the same for every protocol's scorer: ``score``."""
    return score(encoder, encoder_images, sized_images, bins, noise_seed, device, batch_size)
