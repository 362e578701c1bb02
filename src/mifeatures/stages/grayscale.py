"""Grayscale stage: STL-10 uint8 RGB → the article's float64 grayscale (``mifeatures.core.data.images``), at one size.

One job writes one size, so adding or removing a case touches only the sizes it needs.
"""

from __future__ import annotations

import argparse

import numpy as np

from mifeatures.workflow import provenance, usage
from mifeatures.core.data.images import resize_images, to_grayscale
from mifeatures.core.io import atomic_write
from mifeatures.core.data.stl10 import read_stl10_images


def main(argv: list[str] | None = None) -> None:
    """CLI: write the grayscale images at one size."""
    parser = argparse.ArgumentParser(prog="mifeatures grayscale", description=usage.summary(__doc__))
    parser.add_argument("source", help="STL-10 train_X.bin")
    parser.add_argument("--size", type=int, required=True, help="side length, e.g. 96, 88 or 104")
    parser.add_argument("--out", required=True, help=".npy file to write")
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error(f"--size must be ≥ 1, got {args.size}")
    gray = to_grayscale(read_stl10_images(args.source))
    with atomic_write(args.out) as handle:
        np.save(handle, resize_images(gray, args.size))
    provenance.write([args.out], provenance.record("grayscale", {"images": args.source}, {}, {"size": args.size}))
    print(f"wrote {args.out} ({len(gray)} images, {args.size}×{args.size})")


if __name__ == "__main__":
    main()
