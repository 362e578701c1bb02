"""Grayscale stage: STL-10 uint8 RGB → float grayscale in [0, 1], at every map size needed.

As the article computed it, in float64: divide by 255, average R, G and B, then one min–max over
the whole dataset, ``(x − min) / (max − min + 1e-8)``. The copies at 88×88 and 104×104 (for cases a
and b) come from scikit-image's ``resize`` with the defaults of the release the article ran on
(``RESIZE_2019``). Networks take the images as float32; MI bins them in float64, as the article's
``np.histogram2d`` did. One job writes one size, so adding or removing a case touches only the sizes
it needs.
"""

from __future__ import annotations

import argparse

import numpy as np
from skimage.transform import resize

from mifeatures.data import read_stl10_images
from mifeatures import provenance
from mifeatures.io import atomic_write


# The article's min–max adds this to the range.
EPSILON = 1e-8
# skimage.transform.resize's defaults in scikit-image 0.14 (0.14.2, January 2019; the article ran in
# February 2019): no anti-aliasing, and pixels beyond the border are 0. Release 0.15 made both
# today's defaults (anti-aliasing when shrinking, reflection), which differ at b's 104×104 border.
RESIZE_2019 = {"order": 1, "mode": "constant", "cval": 0.0, "clip": True, "preserve_range": False,
               "anti_aliasing": False}


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 96, 96, 3) → float64 (N, 96, 96) in [0, 1), min–max over the whole set, as the article.

    >>> to_grayscale(np.array([[[[0, 0, 0]], [[255, 255, 0]]]], dtype=np.uint8)).ravel().tolist()
    [0.0, 0.99999999]
    """
    gray = (images.astype(np.float64) / 255.0).mean(axis=-1)
    low, high = gray.min(), gray.max()
    if high == low:
        raise ValueError("every pixel of the dataset has the same value; cannot min–max scale it")
    return (gray - low) / (high - low + EPSILON)


def resize_images(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize each (H, W) image of ``gray`` to (size, size) as scikit-image 0.14 did, in float64."""
    if size == gray.shape[-1]:
        return gray.astype(np.float64, copy=True)
    return np.stack([resize(image, (size, size), **RESIZE_2019) for image in gray])


def load_images(path: str, size: int | None = None) -> np.ndarray:
    """Load a grayscale array written by this stage, checking dtype, rank and (optionally) size."""
    images = np.load(path)
    if images.dtype != np.float64 or images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"{path}: expected float64 (N, S, S) grayscale images, got {images.dtype} {images.shape}")
    if size is not None and images.shape[1] != size:
        raise ValueError(f"{path}: expected {size}×{size} images, got {images.shape[1]}×{images.shape[2]}")
    return images


def main(argv: list[str] | None = None) -> None:
    """CLI: write the grayscale images at one size."""
    parser = argparse.ArgumentParser(prog="mifeatures grayscale", description=__doc__.splitlines()[0])
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
