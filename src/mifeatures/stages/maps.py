"""Maps stage: one image's 32 feature maps, as a protocol's scorer computes them, and the image's MI bounds: what
a maps figure draws (``mifeatures.core.information.maps``). Any image's figure builds from its own job, which runs
the encoder on that image alone; no case is rescored.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from mifeatures.core.data.images import load_images
from mifeatures.core.information.maps import as_scored, load_encoder, protocol_maps
from mifeatures.core.information.scoring import image_bounds
from mifeatures.core.io import atomic_write
from mifeatures.core.networks.runtime import DEVICES, set_up
from mifeatures.core.networks.shapes import INPUT_SIZE, map_size
from mifeatures.core.protocols import PROTOCOLS, training_run
from mifeatures.stages import add_run_arguments
from mifeatures.workflow import provenance, usage


def main(argv: list[str] | None = None) -> None:
    """CLI: one image's maps and bounds."""
    parser = argparse.ArgumentParser(prog="mifeatures maps", description=usage.summary(__doc__))
    add_run_arguments(parser, "whose scorer's maps: faithful (each image's own BatchNorm statistics) or corrected "
                              "(eval mode, maps on the 96×96 image grid)")
    parser.add_argument("--image", type=int, required=True, help="index of the image among --encoder-images")
    # params.yaml owns these values (score.*): the CLI takes them as given, with no second default.
    parser.add_argument("--bins", type=int, required=True, help="histogram bins per axis (score.bins)")
    parser.add_argument("--noise-seed", type=int, required=True, help="seed of the noise bound (score.noise_seed)")
    parser.add_argument("--device", choices=DEVICES, required=True,
                        help="where the encoder runs: where the case trained (train.device); auto: CUDA if present")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch; default: %(default)s")
    parser.add_argument("--maps-out", required=True, help="the image's maps to write (.npy, float32, (1, 32, S, S))")
    parser.add_argument("--bounds-out", required=True,
                        help="the image's MI bounds to write (.csv: image, upper, noise), as its figure titles them")
    args = parser.parse_args(argv)
    protocol = PROTOCOLS[args.protocol]
    if problem := protocol.sized_images_problem(args.sized_images is not None):
        parser.error(problem)
    if args.bins < 2:
        parser.error(f"--bins must be ≥ 2, got {args.bins}")
    try:
        runtime = set_up(args.device, args.threads, "fp32")
    except ValueError as error:
        parser.error(f"--device {args.device}, --threads {args.threads}: {error}")
    try:
        case, encoder = load_encoder(args.encoder, None if args.run is None else training_run(*args.run))
    except ValueError as error:
        parser.error(f"--encoder: {error}")
    encoder_images = load_images(args.encoder_images, INPUT_SIZE)
    if not 0 <= args.image < len(encoder_images):
        parser.error(f"--image {args.image}: there is no such image; {args.encoder_images} holds "
                     f"{len(encoder_images)}, indices 0 to {len(encoder_images) - 1}")
    inputs = {"encoder": args.encoder, "encoder_images": args.encoder_images}
    context = {"case": case, "protocol": protocol.name, "image": args.image}
    # An eval-mode protocol's BatchNorm statistics come from every training image, as when the case is scored.
    encoder, batchnorm = as_scored(encoder, protocol, encoder_images, args.encoder)
    if batchnorm:
        context["batchnorm_statistics"] = batchnorm
    sized_images = None
    if protocol.needs_sized_images:
        sized_images = load_images(args.sized_images, map_size(case))[[args.image]]
        inputs["sized_images"] = args.sized_images
    image = [args.image]
    _, maps = protocol_maps(encoder, case, protocol, encoder_images[image], sized_images, runtime.device)
    bounds = pd.DataFrame({"image": image, **image_bounds(encoder_images[image], image, args.bins, args.noise_seed)})
    with atomic_write(args.maps_out) as handle:
        np.save(handle, maps)
    with atomic_write(args.bounds_out, "w") as handle:
        bounds.to_csv(handle, index=False)
    job = provenance.record("maps", inputs, {"score.bins": args.bins, "score.noise_seed": args.noise_seed}, context,
                            runtime=runtime.describe())
    provenance.write([args.maps_out, args.bounds_out], job)
    print(f"case {case} ({protocol.name}), image {args.image}: wrote its maps {args.maps_out} and bounds "
          f"{args.bounds_out}")


if __name__ == "__main__":
    main()
