"""Score stage: MI between each image and each of the 32 feature maps of a trained encoder, by one protocol's
scorer (``Protocol.scorer``: the faithful ``mifeatures.core.information.scoring``, the corrected
``mifeatures.core.information.corrected_scoring``). The scorer is imported by name, so that a job's code, and so
its rerun trigger, is this module and its scorer's alone. The maps figures draw maps the maps stage computes, one
image at a time, as this scorer does (``mifeatures.stages.maps``).
"""

from __future__ import annotations

import argparse
import importlib


from mifeatures.stages import add_run_arguments
from mifeatures.workflow import provenance, usage
from mifeatures.core.data.images import load_images
from mifeatures.core.io import atomic_write
from mifeatures.core.information.maps import as_scored, load_encoder
from mifeatures.core.networks.shapes import INPUT_SIZE, map_size
from mifeatures.core.protocols import PROTOCOLS, training_run
from mifeatures.core.networks.runtime import DEVICES, set_up
from mifeatures.core.information.shifts import draw_shifts

# Every protocol's score.* settings beyond bins and noise_seed: each protocol takes its own and refuses the rest.
SCORE_PARAMS = sorted({name for protocol in PROTOCOLS.values() for name in protocol.score_params})


def main(argv: list[str] | None = None) -> None:
    """CLI: score one trained case over every image."""
    parser = argparse.ArgumentParser(prog="mifeatures score", description=usage.summary(__doc__))
    add_run_arguments(parser, "faithful: the article's scoring; corrected: eval mode, maps aligned on the 96×96 "
                              "image grid, bias-corrected MI (the scoring wildcard)")
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
    parser.add_argument("--device", choices=DEVICES, required=True,
                        help="where the encoder runs: where the case trained (train.device); auto: CUDA if present")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per forward pass; memory grows with it, not with the number of images; "
                             "default: %(default)s")
    args = parser.parse_args(argv)
    protocol = PROTOCOLS[args.protocol]
    if problem := protocol.sized_images_problem(args.sized_images is not None):
        parser.error(problem)
    settings = {name: getattr(args, name) for name in protocol.score_params}
    for name, value in vars(args).items():
        if name in SCORE_PARAMS and (value is None) == (name in settings):
            parser.error(f"--{name.replace('_', '-')}: the {protocol.name} protocol "
                         f"{'needs' if name in settings else 'does not take'} it")
    if "null_shifts" in settings:
        if args.null_seed < 0:
            parser.error(f"--null-seed must be ≥ 0, got {args.null_seed}")
        try:
            draw_shifts((INPUT_SIZE, INPUT_SIZE), args.null_shifts, args.null_seed)
        except ValueError as error:
            parser.error(f"--null-shifts: {error}")
    if args.bins < 2:
        parser.error(f"--bins must be ≥ 2, got {args.bins}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be ≥ 1, got {args.batch_size}")
    try:  # the maps in fp32: batched_feature_maps keeps cuDNN's TF32 off in any case
        runtime = set_up(args.device, args.threads, "fp32")
    except ValueError as error:
        parser.error(f"--device {args.device}, --threads {args.threads}: {error}")
    device = runtime.device
    try:
        case, encoder = load_encoder(args.encoder, None if args.run is None else training_run(*args.run))
    except ValueError as error:
        parser.error(f"--encoder: {error}")
    encoder_images = load_images(args.encoder_images, INPUT_SIZE)
    inputs = {"encoder": args.encoder, "encoder_images": args.encoder_images}
    context = {"case": case, "protocol": protocol.name, "batch_size": args.batch_size}
    encoder, batchnorm = as_scored(encoder, protocol, encoder_images, args.encoder)
    if batchnorm:
        context["batchnorm_statistics"] = batchnorm
    sized_images = None
    if protocol.needs_sized_images:
        sized_images = load_images(args.sized_images, map_size(case))
        inputs["sized_images"] = args.sized_images
    scorer = importlib.import_module(f"mifeatures.{protocol.scorer}")
    table, summary = scorer.score_images(encoder, case, encoder_images, sized_images, args.bins, args.noise_seed,
                                         device, args.batch_size, **settings)
    for frame, out in ((table, args.mi_out), (summary, args.summary_out)):
        with atomic_write(out, "w") as handle:
            frame.to_csv(handle, index=False)
    # The protocol is which computation ran, like the case, so it is context; params are params.yaml values.
    params = {"score.bins": args.bins, "score.noise_seed": args.noise_seed}
    params |= {f"score.{name}": value for name, value in settings.items()}
    job = provenance.record("score", inputs, params, context, runtime=runtime.describe(),
                            code=("stages.score", protocol.scorer))
    provenance.write([args.mi_out, args.summary_out], job)
    estimator, column = next(iter(protocol.estimators.items()))
    print(f"case {case} ({protocol.name}): mean {estimator} MI {summary[column].mean():.4f} nats "
          f"over {len(summary)} images; wrote {args.mi_out} and {args.summary_out}")


if __name__ == "__main__":
    main()
