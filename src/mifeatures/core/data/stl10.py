"""The STL-10 binary layout: each image 3×96×96 uint8 bytes, channel by channel and column-major within
a channel. The embedded sample is written in that same layout, so one reader serves both datasets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mifeatures.core.io import atomic_write

IMAGE_SIZE = 96
IMAGE_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE  # 27 648


def read_stl10_images(path: str | Path) -> np.ndarray:
    """Read an STL-10 ``*_X.bin`` file as uint8 (N, 96, 96, 3) in (row, column, RGB) order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such STL-10 image file; build it with the sample or download rule first")
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise ValueError(
            f"{path}: {size} bytes is not a positive multiple of {IMAGE_BYTES} "
            f"(one 3×{IMAGE_SIZE}×{IMAGE_SIZE} uint8 image); the file is truncated or not an STL-10 *_X.bin"
        )
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
    return np.ascontiguousarray(raw.transpose(0, 3, 2, 1))  # column-major channels → (N, H, W, C)


def write_stl10_images(images: np.ndarray, path: str | Path) -> None:
    """Write uint8 (N, 96, 96, 3) images in the STL-10 binary layout, atomically."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"expected uint8 images of shape (N, 96, 96, 3), got {images.dtype} {images.shape}")
    with atomic_write(path) as handle:
        handle.write(np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tobytes())
