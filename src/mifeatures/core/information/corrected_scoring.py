"""The corrected protocol's scoring: eval-mode maps on the image's own grid, bias-corrected MI, the valid
region and a calibration control (see ``score_corrected``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mifeatures.core.information.estimators import miller_madow, spatial_null
from mifeatures.core.information.maps import batched_feature_maps, eval_encoder, to_image_grid, valid_region
from mifeatures.core.information.mi import mutual_information_many
from mifeatures.core.networks.shapes import INPUT_SIZE, VALID
from mifeatures.core.protocols import MISMATCHED
from mifeatures.core.information.scoring import in_chunks, per_map_table, spread
from mifeatures.core.information.shifts import K_SHIFTS, draw_shifts

# The corrected summary: the bounds, max … std over ``mi_corrected`` (each named for it), then the means of
# the other estimates, on the whole 96×96 grid and on the valid region.
SPREAD_COLUMNS = [f"{statistic}_corrected" for statistic in ("max", "min", "mean", "std")]
CORRECTED_SUMMARY_COLUMNS = ["image", "upper", "noise", *SPREAD_COLUMNS, "mean_plugin", "mean_miller_madow",
                             "mean_valid_plugin", "mean_valid_miller_madow", "mean_valid_corrected",
                             "mean_valid_corrected_mismatched"]


def corrected_estimates(
    images: np.ndarray, maps: np.ndarray, bins: int, null_shifts: int, null_seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(plug-in, Miller–Madow, plug-in − spatial null) MI, each (B, K), of images (B, S, S) against
    their maps (B, K, S, S). Every image gets the same ``null_shifts`` circular shifts, drawn with
    ``null_seed``, so that every image's null is the same operation."""
    plug_in = mutual_information_many(images, maps, bins)
    madow = np.stack([miller_madow(image, image_maps, bins) for image, image_maps in zip(images, maps)])
    null = np.stack([spatial_null(image, image_maps, bins, null_shifts, null_seed)
                     for image, image_maps in zip(images, maps)])
    return plug_in, madow, plug_in - null


def score_corrected(
    encoder: torch.nn.Module, case: str, encoder_images: np.ndarray, bins: int, noise_seed: int,
    null_shifts: int = K_SHIFTS, null_seed: int = 0, device: torch.device | str = "cpu", batch_size: int = 8,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The corrected protocol: per-map table (image, map, mi, mi_miller_madow, mi_corrected, and the same
    three on the valid region: mi_valid, mi_valid_miller_madow, mi_valid_corrected) and per-image
    summary (CORRECTED_SUMMARY_COLUMNS) for every image.

    What it corrects in the faithful ``scoring.score``:
    - the encoder runs in eval mode under no_grad (``eval_encoder``): BatchNorm uses its running
      statistics, not each image's own (the score stage first recomputes them over the training images,
      ``maps.as_trained``);
    - every map is brought onto the image's 96×96 grid (``to_image_grid``), aligned with the
      image content, and scored against the 96×96 encoder input itself, never resampled: every
      case is scored on the same N = 9216 pixels;
    - besides the plug-in MI (``mi``), Miller–Madow's (``mi_miller_madow``) and the plug-in minus
      the spatial null (``mi_corrected``, see ``corrected_estimates``), which is ≈ 0 for a map
      independent of the image however smooth both are. No all-images loop normalisation: the
      raw maps are scored, as the histogram ignores each map's own scaling.
    - every estimate also on the valid region (``valid_region``), the findings' primary score: on the
      whole grid case c's zero-padded frame holds a map's extreme value in most maps and stretches its
      bins, and a's edge-padded frame repeats values, so c − a there partly measures the frames.
    - a calibration control, ``mi_valid_corrected_mismatched``: each image's maps scored, as the primary
      score, against each of the next MISMATCHED images (cyclically; the sample's come from other photos),
      unrelated images, and averaged: what it leaves is what chance layout (shared uniform backgrounds, say)
      leaves between unrelated images after the null, a bound on the bias a difference could owe to layout.
    The summary's ``max_corrected`` … ``std_corrected`` are over ``mi_corrected``; ``mean_plugin``,
    ``mean_miller_madow`` and the ``mean_valid_*`` columns are the means of the others. ``upper`` (MI of
    the image with itself) and ``noise`` are plug-in values, as in ``scoring.score``, on the 96×96 image.

    Chunks of ``batch_size`` images, on ``device``, as in ``scoring.score``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    for side in (INPUT_SIZE, VALID):  # refuse a bad null_shifts before any work
        draw_shifts((side, side), null_shifts, null_seed)
    model = eval_encoder(encoder, torch.device(device))

    def estimates(chunk: slice) -> tuple[np.ndarray, ...]:
        maps = to_image_grid(batched_feature_maps(model, encoder_images[chunk]), case)
        images = encoder_images[chunk]
        indices = np.arange(len(encoder_images))[chunk]
        mismatched = np.mean([corrected_estimates(valid_region(encoder_images[(indices + k) % len(encoder_images)]),
                                                  valid_region(maps), bins, null_shifts, null_seed)[2]
                              for k in range(1, min(MISMATCHED, len(encoder_images) - 1) + 1)], axis=0)
        return (*corrected_estimates(images, maps, bins, null_shifts, null_seed),
                *corrected_estimates(valid_region(images), valid_region(maps), bins, null_shifts, null_seed),
                mismatched)

    (plug_in, madow, corrected, valid_plug_in, valid_madow, valid_corrected, mismatched), bounds = in_chunks(
        estimates, encoder_images, batch_size, bins, noise_seed)
    table = per_map_table({"mi": plug_in, "mi_miller_madow": madow, "mi_corrected": corrected,
                            "mi_valid": valid_plug_in, "mi_valid_miller_madow": valid_madow,
                            "mi_valid_corrected": valid_corrected, "mi_valid_corrected_mismatched": mismatched})
    spread_corrected = {f"{statistic}_corrected": values for statistic, values in spread(corrected).items()}
    summary = pd.DataFrame({"image": np.arange(len(corrected)), **bounds, **spread_corrected,
                            "mean_plugin": plug_in.mean(axis=1), "mean_miller_madow": madow.mean(axis=1),
                            "mean_valid_plugin": valid_plug_in.mean(axis=1),
                            "mean_valid_miller_madow": valid_madow.mean(axis=1),
                            "mean_valid_corrected": valid_corrected.mean(axis=1),
                            "mean_valid_corrected_mismatched": mismatched.mean(axis=1)})
    return table, summary


def score_images(encoder: torch.nn.Module, case: str, encoder_images: np.ndarray, sized_images: None,
                 bins: int, noise_seed: int, device: torch.device, batch_size: int, *, null_shifts: int,
                 null_seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The score stage's call, the same for every protocol's scorer: ``score_corrected``, which scores
    against the 96×96 ``encoder_images`` and takes no sized images."""
    return score_corrected(encoder, case, encoder_images, bins, noise_seed, null_shifts, null_seed, device,
                           batch_size)
