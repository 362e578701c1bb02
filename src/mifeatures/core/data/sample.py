"""The embedded sample: real photos shipped with scikit-image, cut to STL-10's 96×96, deterministically."""

from __future__ import annotations

import numpy as np
import skimage.data
from skimage.transform import resize

from mifeatures.core.data.photos import SAMPLE_PHOTOS
from mifeatures.core.data.stl10 import IMAGE_SIZE


def _sample_photos() -> list[np.ndarray]:
    photos = [getattr(skimage.data, name)() for name in SAMPLE_PHOTOS]
    photos += list(skimage.data.stereo_motorcycle()[:2])  # its left and right views: PHOTO_NAMES' last two
    rgb = []
    for photo in photos:
        photo = np.stack([photo] * 3, axis=-1) if photo.ndim == 2 else photo[..., :3]
        rgb.append(photo.astype(np.uint8))
    return rgb


def make_sample(n_images: int, seed: int) -> np.ndarray:
    """Cut ``n_images`` 96×96 RGB images from scikit-image's real photos, deterministically.

    Image i comes from photo i mod 15 (``photos.source_photo``): a random square of side 96 to half the photo's short
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
