"""Grayscale images as the article computed them, in float64: divide by 255, average R, G and B, then one
min–max over the whole dataset, ``(x − min) / (max − min + 1e-8)``; copies at other sizes come from
scikit-image's ``resize`` with the defaults of the release the article ran on (``RESIZE_2019``).
Networks take the images as float32; MI bins them in float64, as the article's ``np.histogram2d`` did.
"""

from __future__ import annotations

import numpy as np
from skimage.transform import resize

# The article's min–max adds this to the range.
EPSILON = 1e-8
# skimage.transform.resize's defaults in scikit-image 0.14 (0.14.2, January 2019; the article ran in
# February 2019): no anti-aliasing, and pixels beyond the border are 0. Release 0.15 made both
# today's defaults (anti-aliasing when shrinking, reflection), which differ at b's 104×104 border.
RESIZE_2019 = {"order": 1, "mode": "constant", "cval": 0.0, "clip": True, "preserve_range": False,
               "anti_aliasing": False}


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 96, 96, 3) → float64 (N, 96, 96) in [0, 1), min–max over the whole set, as the article.

    >>> to_grayscale(np.array([[[[0, 0, 0]], [[255, 255, 255]]]], dtype=np.uint8)).ravel().round(10).tolist()
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
