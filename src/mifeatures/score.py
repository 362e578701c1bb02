"""Score stage: MI between each image and each of the 32 feature maps of a trained encoder.

Faithful to the article's code, the encoder scores one image at a time in training mode,
so BatchNorm normalises with that image's own statistics (a known flaw, kept on purpose).

The article normalised the maps two ways before the histogram, and both are kept:
- its per-image figures (images 10 and 11) min–max scaled each map on its own, which leaves
  the histogram, hence the MI, unchanged: column ``mi`` of the per-map table;
- its loop over all images took min and max over axes (0, 1, 2) of the NCHW maps, that is per
  image column, jointly over the 32 maps and all rows. That changes the MI: column
  ``mi_all_images``, from which the per-image summary (and so every all-images figure) is made,
  as the article's per-case ``*_MI.npy`` arrays were.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from mifeatures import provenance
from mifeatures.grayscale import load_images
from mifeatures.io import atomic_write
from mifeatures.mi import mutual_information
from mifeatures.models import INPUT_SIZE, build_encoder, map_size

SUMMARY_COLUMNS = ["image", "upper", "noise", "max", "min", "mean", "std"]


def load_encoder(path: str) -> tuple[str, torch.nn.Module]:
    """Return (case, encoder) from a checkpoint written by the train stage."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not {"case", "state_dict"} <= checkpoint.keys():
        raise ValueError(f"{path}: not an encoder checkpoint of the train stage (needs 'case' and 'state_dict')")
    encoder = build_encoder(checkpoint["case"])
    encoder.load_state_dict(checkpoint["state_dict"])
    return checkpoint["case"], encoder


def feature_maps(encoder: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The 32 maps (32, S, S) of one 96×96 image, BatchNorm in training mode as the article scored."""
    encoder.train()
    with torch.no_grad():
        return encoder(torch.from_numpy(image)[None, None])[0].numpy()


def all_images_loop_normalisation(maps: np.ndarray) -> np.ndarray:
    """The article's all-images loop: ``(M - M.min((0,1,2))) / (M.max((0,1,2)) - M.min((0,1,2)) + 1e-8)``
    on the (1, 32, H, W) maps, in their float32; one scale per image column, shared by all maps.

    >>> all_images_loop_normalisation(np.array([[[0, 2], [1, 4]], [[1, 0], [0, 8]]], np.float32)).tolist()
    [[[0.0, 0.25], [1.0, 0.5]], [[1.0, 0.0], [0.0, 1.0]]]
    """
    low = maps.min(axis=(0, 1), keepdims=True)
    return (maps - low) / (maps.max(axis=(0, 1), keepdims=True) - low + np.float32(1e-8))


def noise_bound(image: np.ndarray, index: int, seed: int, bins: int) -> float:
    """MI between ``image`` and N(0, 1) noise seeded by (seed, image index), so it is reproducible."""
    noise = np.random.default_rng([seed, index]).standard_normal(image.shape)
    return float(mutual_information(image, noise[None], bins)[0])


def score(
    encoder: torch.nn.Module, encoder_images: np.ndarray, sized_images: np.ndarray, bins: int, noise_seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-map MI table (image, map, mi, mi_all_images) and per-image summary (SUMMARY_COLUMNS, over
    ``mi_all_images`` as the article's all-images loop) for every image."""
    rows, summaries = [], []
    for index in tqdm(range(len(encoder_images)), desc="score", mininterval=5, unit="image"):
        image = sized_images[index]
        maps = feature_maps(encoder, encoder_images[index])
        mi = mutual_information(image, maps, bins)
        loop = mutual_information(image, all_images_loop_normalisation(maps), bins)
        rows.append(pd.DataFrame({"image": index, "map": np.arange(len(mi)), "mi": mi, "mi_all_images": loop}))
        upper = float(mutual_information(image, image[None], bins)[0])
        summaries.append(
            [index, upper, noise_bound(image, index, noise_seed, bins), loop.max(), loop.min(), loop.mean(),
             loop.std()]
        )
    return pd.concat(rows, ignore_index=True), pd.DataFrame(summaries, columns=SUMMARY_COLUMNS)


def main(argv: list[str] | None = None) -> None:
    """CLI: score one trained case over every image."""
    parser = argparse.ArgumentParser(prog="mifeatures score", description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True, help="checkpoint written by the train stage")
    parser.add_argument("--encoder-images", required=True, help="96×96 grayscale .npy (encoder input)")
    parser.add_argument("--sized-images", required=True, help="grayscale .npy at the case's map size")
    parser.add_argument("--bins", type=int, default=30, help="histogram bins per axis; default: %(default)s")
    parser.add_argument("--noise-seed", type=int, default=0, help="seed of the noise bound; default: %(default)s")
    parser.add_argument("--mi-out", required=True, help="per-map table to write (.csv)")
    parser.add_argument("--summary-out", required=True, help="per-image summary to write (.csv)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch; default: %(default)s")
    args = parser.parse_args(argv)
    if args.bins < 2:
        parser.error(f"--bins must be ≥ 2, got {args.bins}")
    torch.set_num_threads(args.threads)
    case, encoder = load_encoder(args.encoder)
    encoder_images = load_images(args.encoder_images, INPUT_SIZE)
    sized_images = load_images(args.sized_images, map_size(case))
    table, summary = score(encoder, encoder_images, sized_images, args.bins, args.noise_seed)
    for frame, out in ((table, args.mi_out), (summary, args.summary_out)):
        with atomic_write(out, "w") as handle:
            frame.to_csv(handle, index=False)
    job = provenance.record(
        "score", {"encoder": args.encoder, "encoder_images": args.encoder_images, "sized_images": args.sized_images},
        {"score.bins": args.bins, "score.noise_seed": args.noise_seed}, {"case": case}, device="cpu")
    provenance.write([args.mi_out, args.summary_out], job)
    print(f"case {case}: mean MI {summary['mean'].mean():.4f} nats over {len(summary)} images; "
          f"wrote {args.mi_out} and {args.summary_out}")


if __name__ == "__main__":
    main()
