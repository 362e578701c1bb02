"""Score stage: MI between each image and each of the 32 feature maps of a trained encoder, by one protocol's
scorer (``protocols.SCORERS``: the faithful ``mifeatures.scoring``, the corrected
``mifeatures.corrected_scoring``). The scorer is imported by name, so that a job's code, and so its rerun
trigger, is this module and its scorer's alone.
"""

from __future__ import annotations

import argparse
import importlib

import torch

from mifeatures import provenance
from mifeatures.images import load_images
from mifeatures.io import atomic_write
from mifeatures.maps import load_encoder
from mifeatures.models import INPUT_SIZE, map_size, resolve_device
from mifeatures.protocols import PROTOCOLS, SCORERS
from mifeatures.shifts import draw_shifts


def main(argv: list[str] | None = None) -> None:
    """CLI: score one trained case over every image."""
    parser = argparse.ArgumentParser(prog="mifeatures score", description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True, help="checkpoint written by the train stage")
    parser.add_argument("--encoder-images", required=True, help="96×96 grayscale .npy (encoder input)")
    parser.add_argument("--protocol", choices=PROTOCOLS, required=True,
                        help="faithful: the article's scoring; corrected: eval mode, maps aligned on the "
                             "96×96 image grid, bias-corrected MI (the scoring wildcard)")
    parser.add_argument("--sized-images",
                        help="grayscale .npy at the case's map size; faithful protocol only, which needs it")
    # params.yaml owns these values (score.*): the CLI takes them as given, with no second default.
    parser.add_argument("--bins", type=int, required=True, help="histogram bins per axis (score.bins)")
    parser.add_argument("--noise-seed", type=int, required=True, help="seed of the noise bound (score.noise_seed)")
    parser.add_argument("--null-shifts", type=int,
                        help="corrected protocol only, and needed by it: circular shifts of the spatial null "
                             "(score.null_shifts)")
    parser.add_argument("--null-seed", type=int,
                        help="corrected protocol only, and needed by it: seed of the spatial null's shifts "
                             "(score.null_seed)")
    parser.add_argument("--mi-out", required=True, help="per-map table to write (.csv)")
    parser.add_argument("--summary-out", required=True, help="per-image summary to write (.csv)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch; default: %(default)s")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), required=True,
                        help="where the encoder runs: where the case trained (train.device); auto: CUDA if present")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per forward pass; memory grows with it, not with the number of images; "
                             "default: %(default)s")
    args = parser.parse_args(argv)
    corrected = args.protocol == "corrected"
    if corrected:
        if args.sized_images is not None:
            parser.error("--sized-images is not used by the corrected protocol, which scores against the "
                         "96×96 --encoder-images")
        if args.null_shifts is None or args.null_seed is None:
            parser.error("the corrected protocol needs --null-shifts and --null-seed")
        if args.null_seed < 0:
            parser.error(f"--null-seed must be ≥ 0, got {args.null_seed}")
        try:
            draw_shifts((INPUT_SIZE, INPUT_SIZE), args.null_shifts, args.null_seed)
        except ValueError as error:
            parser.error(f"--null-shifts: {error}")
    else:
        if args.sized_images is None:
            parser.error("the faithful protocol needs --sized-images")
        if args.null_shifts is not None or args.null_seed is not None:
            parser.error("--null-shifts and --null-seed belong to the corrected protocol "
                         "(--protocol corrected)")
    if args.bins < 2:
        parser.error(f"--bins must be ≥ 2, got {args.bins}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be ≥ 1, got {args.batch_size}")
    try:
        device = resolve_device(args.device)
    except ValueError:
        parser.error("--device is cuda but no CUDA device is available; use auto or cpu")
    torch.set_num_threads(args.threads)
    # batched_feature_maps turns cuDNN's TF32 off while it runs; off for the whole job too, so that
    # the record below reports the float settings the maps were computed with.
    torch.backends.cudnn.allow_tf32 = False
    case, encoder = load_encoder(args.encoder)
    encoder_images = load_images(args.encoder_images, INPUT_SIZE)
    inputs = {"encoder": args.encoder, "encoder_images": args.encoder_images}
    # The protocol is which computation ran, like the case, so it is context; params are params.yaml values.
    params = {"score.bins": args.bins, "score.noise_seed": args.noise_seed}
    scorer = importlib.import_module(f"mifeatures.{SCORERS[args.protocol]}")
    if corrected:
        table, summary = scorer.score_corrected(encoder, case, encoder_images, args.bins, args.noise_seed,
                                         args.null_shifts, args.null_seed, device, args.batch_size)
        params |= {"score.null_shifts": args.null_shifts, "score.null_seed": args.null_seed}
    else:
        sized_images = load_images(args.sized_images, map_size(case))
        table, summary = scorer.score(encoder, encoder_images, sized_images, args.bins, args.noise_seed, device,
                               args.batch_size)
        inputs["sized_images"] = args.sized_images
    for frame, out in ((table, args.mi_out), (summary, args.summary_out)):
        with atomic_write(out, "w") as handle:
            frame.to_csv(handle, index=False)
    job = provenance.record("score", inputs, params,
                            {"case": case, "protocol": args.protocol, "batch_size": args.batch_size},
                            device=str(device), code=("score", SCORERS[args.protocol]))
    provenance.write([args.mi_out, args.summary_out], job)
    measure = "corrected MI" if corrected else "MI"
    print(f"case {case} ({args.protocol}): mean {measure} {summary['mean'].mean():.4f} nats over "
          f"{len(summary)} images; wrote {args.mi_out} and {args.summary_out}")


if __name__ == "__main__":
    main()
