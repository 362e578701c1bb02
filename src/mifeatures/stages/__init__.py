"""The workflow's stages: one module per rule, each a thin command line over the core that writes its
outputs' provenance records. A stage never imports another stage; what several take alike is here."""

from __future__ import annotations

import argparse

from mifeatures.core.protocols import PROTOCOLS


def add_run_arguments(parser: argparse.ArgumentParser, protocol_help: str) -> None:
    """The options of a job that runs a trained encoder under a protocol (score, maps, crosscheck): the checkpoint
    and the run it must be, the 96×96 images, the protocol, and the images at the map size it may pair maps with."""
    parser.add_argument("--encoder", required=True, help="checkpoint written by the train stage")
    parser.add_argument("--run", nargs=3, metavar=("CASE", "PROTOCOL", "SEED"),
                        help="the training run the checkpoint must be (its place in results/train); another is "
                             "refused")
    parser.add_argument("--encoder-images", required=True, help="96×96 grayscale .npy (encoder input)")
    parser.add_argument("--protocol", choices=PROTOCOLS, required=True, help=protocol_help)
    parser.add_argument("--sized-images",
                        help="grayscale .npy at the case's map size; faithful protocol only, which needs it")
