"""Sample stage: the embedded sample, real photos cut to STL-10's 96×96 and written in its binary layout."""

from __future__ import annotations

import argparse

from mifeatures.workflow import provenance, usage
from mifeatures.core.data.sample import make_sample
from mifeatures.core.data.stl10 import write_stl10_images


def main(argv: list[str] | None = None) -> None:
    """CLI: build the embedded sample."""
    parser = argparse.ArgumentParser(prog="mifeatures sample", description=usage.summary(__doc__))
    parser.add_argument("--n-images", type=int, required=True, help="number of 96×96 images")
    parser.add_argument("--seed", type=int, required=True, help="seed of the crop positions")
    parser.add_argument("--out", required=True, help="path of the train_X.bin to write")
    args = parser.parse_args(argv)
    write_stl10_images(make_sample(args.n_images, args.seed), args.out)
    job = provenance.record("sample", {}, {"data.sample.n_images": args.n_images, "data.sample.seed": args.seed})
    provenance.write([args.out], job)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
