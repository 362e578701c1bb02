"""Cross-check stage: an estimator independent of the histogram, on a seeded subsample.

The Kraskov–Stögbauer–Grassberger k-nearest-neighbour MI (``mifeatures.core.information.ksg``) of the same
image–map pairs the score stage bins: the protocol's maps against the protocol's reference image
(faithful: the image resized to the map's size, maps of single-image train-mode BatchNorm; corrected:
the valid region of the 96×96 image and of its eval-mode maps on its grid, where the primary score is),
with KSG's own circular-shift null beside it, so that KSG minus its null is corrected for spatial
smoothness as the histogram's null-corrected MI is.
Which images and maps are drawn depends only on the number of images and the seed, so every case
and training seed is checked on the same pairs, and the findings stage compares the cases on them.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

from mifeatures.stages import add_run_arguments
from mifeatures.workflow import provenance, usage
from mifeatures.core.data.images import load_images
from mifeatures.core.io import atomic_write
from mifeatures.core.information.ksg import ksg_mi
from mifeatures.core.information.maps import as_scored, load_encoder, protocol_maps, valid_region
from mifeatures.core.networks.shapes import INPUT_SIZE, N_MAPS, map_size
from mifeatures.core.protocols import PROTOCOLS, training_run, Protocol
from mifeatures.core.networks.runtime import DEVICES, set_up

COLUMNS = ["image", "map", "ksg", "ksg_null", "ksg_corrected"]


def draw_pairs(n_images: int, images: int, maps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted image indices (``images`` of ``n_images``, all if fewer) and map indices (``maps`` of 32),
    drawn without replacement by ``np.random.default_rng(seed)``.

    >>> [v.tolist() for v in draw_pairs(5, 10, 2, seed=0)][0]
    [0, 1, 2, 3, 4]
    """
    if images < 1 or not 1 <= maps <= N_MAPS:
        raise ValueError(f"need ≥ 1 image and 1 … {N_MAPS} maps, got {images} and {maps}")
    rng = np.random.default_rng(seed)
    chosen_images = np.sort(rng.choice(n_images, size=min(images, n_images), replace=False))
    return chosen_images, np.sort(rng.choice(N_MAPS, size=maps, replace=False))


def crosscheck(encoder: torch.nn.Module, case: str, protocol: Protocol, encoder_images: np.ndarray,
               sized_images: np.ndarray | None, images: int, maps: int, pixels: int, neighbors: int, seed: int,
               null_shifts: int, device: torch.device | str = "cpu") -> pd.DataFrame:
    """KSG MI (nats) of each drawn (image, map) pair, its null over ``null_shifts`` shifts and the
    difference: one row per pair, ``COLUMNS``."""
    chosen_images, chosen_maps = draw_pairs(len(encoder_images), images, maps, seed)
    references, all_maps = protocol_maps(encoder, case, protocol, encoder_images[chosen_images],
                                         None if sized_images is None else sized_images[chosen_images], device)
    if protocol.reference == "grid":  # where every case's maps come from image pixels only, as the primary score
        references, all_maps = valid_region(references), valid_region(all_maps)
    rows = []
    for index, reference, image_maps in zip(chosen_images, references, all_maps):
        ksg, null = ksg_mi(reference, image_maps[chosen_maps], n_neighbors=neighbors, sample=pixels, seed=seed,
                           shifts=null_shifts)
        rows += [(int(index), int(k), float(v), float(n), float(v - n)) for k, v, n in zip(chosen_maps, ksg, null)]
    return pd.DataFrame(rows, columns=COLUMNS)


def main(argv: list[str] | None = None) -> None:
    """CLI: KSG MI of a seeded subsample of one trained case's image–map pairs."""
    parser = argparse.ArgumentParser(prog="mifeatures crosscheck", description=usage.summary(__doc__))
    add_run_arguments(parser, "whose maps and reference images")
    # params.yaml owns these values (score.ksg.*): the CLI takes them as given, with no second default.
    parser.add_argument("--images", type=int, required=True, help="images drawn (score.ksg.images)")
    parser.add_argument("--maps", type=int, required=True, help="maps drawn per image (score.ksg.maps)")
    parser.add_argument("--pixels", type=int, required=True, help="pixels per pair (score.ksg.pixels)")
    parser.add_argument("--neighbors", type=int, required=True, help="k of the k-NN estimate (score.ksg.neighbors)")
    parser.add_argument("--seed", type=int, required=True, help="seeds the draws (score.ksg.seed)")
    parser.add_argument("--null-shifts", type=int, required=True, help="circular shifts of KSG's own null "
                        "(score.ksg.null_shifts)")
    parser.add_argument("--device", choices=DEVICES, required=True,
                        help="where the encoder runs: where the case trained (train.device)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch; default: %(default)s")
    parser.add_argument("--out", required=True, help="table to write (.csv)")
    args = parser.parse_args(argv)
    protocol = PROTOCOLS[args.protocol]
    if problem := protocol.sized_images_problem(args.sized_images is not None):
        parser.error(problem)
    for name in ("images", "maps", "neighbors"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    if args.maps > N_MAPS or args.pixels <= args.neighbors or args.seed < 0 or args.null_shifts < 1:
        parser.error(f"need --maps ≤ {N_MAPS}, --pixels > --neighbors, --seed ≥ 0 and --null-shifts ≥ 1")
    try:  # as in score: the maps in fp32
        runtime = set_up(args.device, args.threads, "fp32")
    except ValueError as error:
        parser.error(f"--device {args.device}, --threads {args.threads}: {error}")
    try:
        case, encoder = load_encoder(args.encoder, None if args.run is None else training_run(*args.run))
    except ValueError as error:
        parser.error(f"--encoder: {error}")
    encoder_images = load_images(args.encoder_images, INPUT_SIZE)
    inputs = {"encoder": args.encoder, "encoder_images": args.encoder_images}
    context = {"case": case, "protocol": args.protocol}
    encoder, batchnorm = as_scored(encoder, protocol, encoder_images, args.encoder)  # as the score stage does
    if batchnorm:
        context["batchnorm_statistics"] = batchnorm
    sized_images = None
    if args.sized_images is not None:
        sized_images = load_images(args.sized_images, map_size(case))
        inputs["sized_images"] = args.sized_images
    device = runtime.device
    table = crosscheck(encoder, case, protocol, encoder_images, sized_images, args.images, args.maps,
                       args.pixels, args.neighbors, args.seed, args.null_shifts, device)
    with atomic_write(args.out, "w") as handle:
        table.to_csv(handle, index=False)
    params = {f"score.ksg.{name}": getattr(args, name)
              for name in ("images", "maps", "pixels", "neighbors", "seed", "null_shifts")}
    job = provenance.record("crosscheck", inputs, params, context, runtime=runtime.describe())
    provenance.write([args.out], job)
    print(f"case {case} ({args.protocol}): mean KSG MI {table['ksg'].mean():.4f}, minus its null "
          f"{table['ksg_corrected'].mean():.4f} nats over {len(table)} pairs; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
