"""One's own image files made 96×96 RGB images, the way STL-10's are, in the order of
``mifeatures.core.data.folder``; the folder stage writes them in STL-10's binary layout, so every stage after
it is unchanged.

Each image is turned upright by its EXIF orientation, made RGB (an alpha channel is dropped, a grayscale image
replicated), cut to its central square and resized to 96×96 with Lanczos filtering. An image smaller than 96
pixels on its shorter side is refused rather than enlarged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mifeatures.core.data.folder import FolderError
from mifeatures.core.data.stl10 import IMAGE_SIZE


def _refuse_if_small(path: str | Path, image: Image.Image) -> None:
    width, height = image.size  # a quarter turn by its EXIF orientation keeps the shorter side
    if min(width, height) < IMAGE_SIZE:
        raise FolderError(f"{path}: {width}×{height} pixels; each image needs at least {IMAGE_SIZE} pixels on its "
                          "shorter side (it is cut to a square and reduced to 96×96, never enlarged)")


def check_size(path: str | Path) -> None:
    """Refuse a file that is not a readable image or is smaller than 96 pixels on a side (read from its header)."""
    try:
        with Image.open(path) as image:
            _refuse_if_small(path, image)
    except OSError as error:  # PIL's UnidentifiedImageError among them
        raise FolderError(f"{path}: cannot be read as an image ({error})") from error


def load_image(path: str | Path) -> np.ndarray:
    """One file as a uint8 (96, 96, 3) image: upright, RGB, its central square resized with Lanczos; refused as
    ``check_size`` refuses, or when its data do not decode."""
    try:
        with Image.open(path) as image:
            _refuse_if_small(path, image)
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except OSError as error:
        raise FolderError(f"{path}: cannot be read as an image ({error})") from error
    side = min(upright.size)
    left, top = (upright.width - side) // 2, (upright.height - side) // 2
    square = upright.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS), dtype=np.uint8)


def load_folder(files: list[Path]) -> np.ndarray:
    """The images of ``files`` (``image_files``' order) as uint8 (N, 96, 96, 3)."""
    return np.stack([load_image(path) for path in files])
