"""Train stage: fit one encoder and its critics with the DeepInfoMax objective
(``mifeatures.core.networks.training``), or several seeds of one case together
(``mifeatures.core.networks.together``)."""

from __future__ import annotations

import argparse
import importlib
import logging
from dataclasses import asdict
from pathlib import Path

from mifeatures.workflow import provenance, sources, usage
from mifeatures.core.data.images import load_images
from mifeatures.core.networks.shapes import INPUT_SIZE, MAP_SIZES, Critics, map_size
from mifeatures.core.protocols import PROTOCOLS
from mifeatures.core.networks.runtime import DEVICES, PRECISIONS, set_up
from mifeatures.core.networks.training import TrainConfig, run, write_run


def main(argv: list[str] | None = None) -> None:
    """CLI: train one case."""
    parser = argparse.ArgumentParser(prog="mifeatures train", description=usage.summary(__doc__))
    parser.add_argument("--case", required=True, choices=sorted(MAP_SIZES), help="the encoder's case")
    parser.add_argument("--encoder-images", required=True, help="96×96 grayscale .npy (encoder input)")
    parser.add_argument("--critic-images", required=True, help="grayscale .npy at the case's map size")
    parser.add_argument("--encoder-out", required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--loss-out", required=True, help="per-step loss log to write (.csv)")
    # params.yaml owns these values (train.*): the CLI takes them as given, with no second default.
    parser.add_argument("--epochs", type=int, required=True, help="passes over the images (train.epochs)")
    parser.add_argument("--batch-size", type=int, required=True, help="images per step (train.batch_size)")
    parser.add_argument("--lr", type=float, required=True, help="Adam learning rate (train.lr)")
    parser.add_argument("--seed", type=int, nargs="+", required=True,
                        help="the run's seed (one of train.seeds); several, with --together, are trained in one "
                             "batched computation (mifeatures.core.networks.together), and --encoder-out and "
                             "--loss-out then hold {seed}")
    parser.add_argument("--together", action=argparse.BooleanOptionalAction, required=True,
                        help="train.together: the seeds of --seed trained in one job; one seed alone is its solo run")
    parser.add_argument("--alpha", type=float, required=True, help="global weight (train.alpha)")
    parser.add_argument("--beta", type=float, required=True, help="local weight (train.beta)")
    parser.add_argument("--gamma", type=float, required=True, help="prior weight (train.gamma)")
    parser.add_argument("--critic-channels", type=int, required=True,
                        help="the critics' hidden channels (train.critic_channels)")
    parser.add_argument("--global-units", type=int, required=True,
                        help="the global critic's MLP units (train.global_units)")
    parser.add_argument("--device", choices=DEVICES, required=True, help="auto: CUDA if present (train.device)")
    parser.add_argument("--precision", choices=PRECISIONS, required=True,
                        help="fp32 (no TF32), tf32 (CUDA only) or bf16 autocast (train.precision)")
    parser.add_argument("--fused-adam", action=argparse.BooleanOptionalAction, required=True,
                        help="Adam's fused kernel on a CPU too (train.fused_adam; always on a GPU)")
    parser.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, required=True,
                        help="train.cuda_graph: each step on fixed buffers, captured once as a CUDA graph and "
                             "replayed on a GPU; the same arithmetic eagerly on a CPU")
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
    together = len(args.seed) > 1
    if args.cuda_graph and (together or args.precision == "bf16"):
        parser.error("--cuda-graph: one seed per job, in fp32 or tf32 (bf16's prior draws follow the maps' dtype)")
    if together and not args.together:
        parser.error(f"--seed {' '.join(map(str, args.seed))}: several seeds are trained in one job with --together "
                     "(train.together) only")
    configs = [TrainConfig(args.epochs, args.batch_size, args.lr, seed, args.alpha, args.beta, args.gamma,
                           args.device, args.precision, PROTOCOLS[args.protocol].adversarial_prior)
               for seed in args.seed]
    try:
        critics = Critics(args.critic_channels, args.global_units)
    except ValueError as error:
        parser.error(f"--critic-channels {args.critic_channels}, --global-units {args.global_units}: {error}")
    if together:  # imported by name, so that the workflow's one-seed jobs neither run nor rerun with it
        together_module = importlib.import_module("mifeatures.core.networks.together")
        try:
            together_module.check_configs(configs)
        except ValueError as error:
            parser.error(f"--seed {' '.join(map(str, args.seed))}: {error}")
        if "{seed}" not in args.encoder_out or "{seed}" not in args.loss_out:
            parser.error("several seeds write one checkpoint and loss log each: --encoder-out and --loss-out "
                         "must hold {seed}")
        if args.resume_state or args.progress:
            parser.error("seeds trained together keep no --resume-state or --progress file: train one seed per "
                         "job for those")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        runtime = set_up(args.device, args.threads, args.precision)
    except ValueError as error:
        parser.error(f"--device {args.device}, --threads {args.threads}: {error}")
    inputs = {"encoder_images": args.encoder_images, "critic_images": args.critic_images}
    if together:
        runs = together_module.train_together(args.case, load_images(args.encoder_images, INPUT_SIZE),
                                              load_images(args.critic_images, map_size(args.case)), configs,
                                              runtime, args.fused_adam, critics=critics)
        outputs = []
        for config, (state_dict, losses) in zip(configs, runs):
            paths = (args.encoder_out.format(seed=config.seed), args.loss_out.format(seed=config.seed))
            write_run(args.case, config, state_dict, losses, *paths)
            outputs.append((config, paths, losses))
    else:
        losses = run(args.case, args.encoder_images, args.critic_images, configs[0], args.encoder_out,
                     args.loss_out, runtime, args.resume_state, args.checkpoint_every, discard_resume=False,
                     code=sources.digest("stages.train"), progress=args.progress, fused_adam=args.fused_adam,
                     cuda_graph=args.cuda_graph, critics=critics)
        outputs = [(configs[0], (args.encoder_out, args.loss_out), losses)]
    for config, paths, losses in outputs:
        # Protocol and seed say which run this is, as the case does: context. The params are params.yaml's
        # train keys (train.seeds holds the seed; the protocol sets adversarial_prior).
        params = {f"train.{key}": value for key, value in asdict(config).items()
                  if key not in ("seed", "adversarial_prior")} | {"train.fused_adam": args.fused_adam,
                                                                  "train.together": args.together,
                                                                  "train.cuda_graph": args.cuda_graph,
                                                                  "train.critic_channels": critics.channels,
                                                                  "train.global_units": critics.units}
        context = {"case": args.case, "protocol": args.protocol, "seed": config.seed}
        if together:
            context["trained_with"] = args.seed
        job = provenance.record("train", inputs, params, context, runtime=runtime.describe(),
                                code=("stages.train", "core.networks.together") if together else None)
        provenance.write(list(paths), job)
        final = losses[losses.epoch == losses.epoch.max()].loss.mean()
        print(f"case {args.case}, seed {config.seed}: {len(losses)} steps, last-epoch mean loss {final:.4f}; "
              f"wrote {paths[0]} and {paths[1]}")
    if args.resume_state:  # only now is the job's output complete
        Path(args.resume_state).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
