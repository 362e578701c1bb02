"""Train stage: fit one encoder and its critics with the DeepInfoMax objective (``mifeatures.training``)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path

from mifeatures import provenance, sources
from mifeatures.protocols import PROTOCOLS
from mifeatures.runtime import DEVICES, PRECISIONS, set_up
from mifeatures.training import TrainConfig, run


def main(argv: list[str] | None = None) -> None:
    """CLI: train one case."""
    parser = argparse.ArgumentParser(prog="mifeatures train", description=__doc__.splitlines()[0])
    parser.add_argument("--case", required=True, help="encoder case: a, b, c or d")
    parser.add_argument("--encoder-images", required=True, help="96×96 grayscale .npy (encoder input)")
    parser.add_argument("--critic-images", required=True, help="grayscale .npy at the case's map size")
    parser.add_argument("--encoder-out", required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--loss-out", required=True, help="per-step loss log to write (.csv)")
    # params.yaml owns these values (train.*): the CLI takes them as given, with no second default.
    parser.add_argument("--epochs", type=int, required=True, help="passes over the images (train.epochs)")
    parser.add_argument("--batch-size", type=int, required=True, help="images per step (train.batch_size)")
    parser.add_argument("--lr", type=float, required=True, help="Adam learning rate (train.lr)")
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (one of train.seeds)")
    parser.add_argument("--alpha", type=float, required=True, help="global weight (train.alpha)")
    parser.add_argument("--beta", type=float, required=True, help="local weight (train.beta)")
    parser.add_argument("--gamma", type=float, required=True, help="prior weight (train.gamma)")
    parser.add_argument("--device", choices=DEVICES, required=True, help="auto: CUDA if present (train.device)")
    parser.add_argument("--precision", choices=PRECISIONS, required=True,
                        help="fp32 (no TF32), tf32 (CUDA only) or bf16 autocast (train.precision)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="faithful",
                        help="faithful: the article's single loss; corrected: the prior played adversarially, "
                             "as the official DIM code does (the encoder fools a discriminator trained on "
                             "detached maps); default: %(default)s")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch; default: %(default)s")
    parser.add_argument("--resume-state", help="state to resume from and save to; default: none")
    parser.add_argument("--progress", help="file that shows how far the run is, rewritten every few seconds")
    parser.add_argument("--checkpoint-every", type=int, required=True,
                        help="epochs between saved resume states (train.checkpoint_every)")
    args = parser.parse_args(argv)
    if args.checkpoint_every < 1:
        parser.error(f"--checkpoint-every must be ≥ 1, got {args.checkpoint_every}")
    if args.threads < 1:
        parser.error(f"--threads must be ≥ 1, got {args.threads}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        runtime = set_up(args.device, args.threads, args.precision)
    except ValueError as error:
        parser.error(f"--device: {error} (train.device)")
    config = TrainConfig(args.epochs, args.batch_size, args.lr, args.seed, args.alpha, args.beta,
                         args.gamma, args.device, args.precision, PROTOCOLS[args.protocol].adversarial_prior)
    losses = run(args.case, args.encoder_images, args.critic_images, config, args.encoder_out, args.loss_out,
                 runtime, args.resume_state, args.checkpoint_every, discard_resume=False,
                 code=sources.digest("train"), progress=args.progress)
    # Protocol and seed say which run this is, as the case does: context. The params are params.yaml's
    # train keys (train.seeds holds the seed; the protocol sets adversarial_prior).
    params = {f"train.{key}": value for key, value in asdict(config).items()
              if key not in ("seed", "adversarial_prior")}
    job = provenance.record(
        "train", {"encoder_images": args.encoder_images, "critic_images": args.critic_images}, params,
        {"case": args.case, "protocol": args.protocol, "seed": args.seed}, runtime=runtime.describe())
    provenance.write([args.encoder_out, args.loss_out], job)
    if args.resume_state:  # only now is the job's output complete
        Path(args.resume_state).unlink(missing_ok=True)
    final = losses[losses.epoch == losses.epoch.max()].loss.mean()
    print(f"case {args.case}: {len(losses)} steps, last-epoch mean loss {final:.4f}; wrote "
          f"{Path(args.encoder_out)} and {Path(args.loss_out)}")


if __name__ == "__main__":
    main()
