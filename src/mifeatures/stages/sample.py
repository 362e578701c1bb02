"""Sample stage: the embedded sample, real photos cut to STL-10's 96×96 and written in its binary layout."""

from __future__ import annotations

import argparse

import numpy as np
import skimage.data
from skimage.transform import resize

from mifeatures.workflow import provenance, usage
from mifeatures.core.data.stl10 import IMAGE_SIZE, write_stl10_images

# Real photographs shipped inside scikit-image's wheel (no download); grayscale ones are
# replicated to three channels, which the grayscale stage averages back anyway.
SAMPLE_PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket",
)  # fmt: skip


def _sample_photos() -> list[np.ndarray]:
    photos = [getattr(skimage.data, name)() for name in SAMPLE_PHOTOS]
    photos += list(skimage.data.stereo_motorcycle()[:2])
    rgb = []
    for photo in photos:
        photo = np.stack([photo] * 3, axis=-1) if photo.ndim == 2 else photo[..., :3]
        rgb.append(photo.astype(np.uint8))
    return rgb


def make_sample(n_images: int, seed: int) -> np.ndarray:
    """Cut ``n_images`` 96×96 RGB images from scikit-image's real photos, deterministically.

    Image i comes from photo i mod 15: a random square of side 96 to half the photo's short
    side, resized to 96×96, so the sample mixes textures, faces, animals and scenes the way a
    natural-image set does.
    """
    if n_images < 1:
        raise ValueError(f"n_images must be ≥ 1, got {n_images}")
    rng = np.random.default_rng(seed)
    photos = _sample_photos()
    images = np.empty((n_images, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i in range(n_images):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        side = int(rng.integers(IMAGE_SIZE, max(IMAGE_SIZE, min(height, width) // 2) + 1))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = photo[top : top + side, left : left + side]
        small = resize(crop, (IMAGE_SIZE, IMAGE_SIZE, 3), anti_aliasing=True, preserve_range=True)
        images[i] = np.clip(np.round(small), 0, 255).astype(np.uint8)
    return images


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
