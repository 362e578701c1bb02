"""Data stage: the STL-10 binary layout, the embedded sample, and the STL-10 download.

STL-10 stores each image as 3×96×96 uint8 bytes, channel by channel and column-major
within a channel. The embedded sample is written in that same layout, so one reader
serves both datasets.
"""

from __future__ import annotations

import argparse
import logging
import tarfile
from pathlib import Path

import numpy as np
import pooch
import requests
import skimage.data
from skimage.transform import resize

from mifeatures.io import atomic_write

log = logging.getLogger(__name__)

IMAGE_SIZE = 96
IMAGE_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE  # 27 648
ARCHIVE_NAME = "stl10_binary.tar.gz"
TRAIN_IMAGES = "stl10_binary/train_X.bin"
TRAIN_MEMBERS = (TRAIN_IMAGES, "stl10_binary/train_y.bin", "stl10_binary/class_names.txt")

# Real photographs shipped inside scikit-image's wheel (no download); grayscale ones are
# replicated to three channels, which the grayscale stage averages back anyway.
SAMPLE_PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket",
)  # fmt: skip


def read_stl10_images(path: str | Path) -> np.ndarray:
    """Read an STL-10 ``*_X.bin`` file as uint8 (N, 96, 96, 3) in (row, column, RGB) order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such STL-10 image file; build it with the data stage first")
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


def download_stl10(url: str, md5: str, out: str | Path, progress: bool = True) -> Path:
    """Download the STL-10 archive beside ``out``'s folder, verify its md5 and extract the train split.

    ``out`` is the path of ``stl10_binary/train_X.bin``; the archive is kept in the folder above
    ``stl10_binary`` so a rerun does not download again. Extracted files appear atomically.
    """
    out = Path(out)
    if out.name != Path(TRAIN_IMAGES).name or out.parent.name != Path(TRAIN_IMAGES).parent.name:
        raise ValueError(f"out must end in {TRAIN_IMAGES}, got {out}")
    root = out.parent.parent
    try:
        archive = pooch.retrieve(
            url, known_hash=f"md5:{md5}", fname=ARCHIVE_NAME, path=root, progressbar=progress
        )
    except ValueError as error:
        if "does not match the known hash" not in str(error):  # e.g. an unsupported URL scheme
            raise ValueError(f"cannot download {url}: {error} (data.stl10.url in params.yaml)") from error
        # pooch has already removed the file that failed the check
        raise ValueError(
            f"{url}: checksum failed ({error}). Check data.stl10.url/md5 in params.yaml, "
            f"or place a verified {ARCHIVE_NAME} in {root} by hand"
        ) from error
    except requests.RequestException as error:
        raise ConnectionError(
            f"could not download {url}: {error}. Use a mirror (data.stl10.url in params.yaml), "
            f"place {ARCHIVE_NAME} in {root} by hand, or use data.dataset: sample"
        ) from error
    _extract_train_split(Path(archive), root)
    return out


def _extract_train_split(archive: Path, root: Path) -> None:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = set(tar.getnames())
            missing = [member for member in TRAIN_MEMBERS if member not in names]
            if missing:
                raise ValueError(f"{archive}: not an STL-10 archive, it lacks {', '.join(missing)}")
            for member in TRAIN_MEMBERS:
                source = tar.extractfile(member)
                if source is None:
                    raise ValueError(f"{archive}: {member} is not a regular file; not an STL-10 archive")
                with source, atomic_write(root / member) as target:
                    while chunk := source.read(1 << 20):
                        target.write(chunk)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ValueError(f"{archive}: corrupt or truncated archive ({error}); delete it and rerun") from error
    log.info("extracted %s into %s", ", ".join(TRAIN_MEMBERS), root)


def main(argv: list[str] | None = None) -> None:
    """CLI: build the embedded sample, or download STL-10."""
    parser = argparse.ArgumentParser(prog="mifeatures data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sample = commands.add_parser("sample", help="cut the embedded sample from scikit-image's photos")
    sample.add_argument("--n-images", type=int, required=True, help="number of 96×96 images")
    sample.add_argument("--seed", type=int, required=True, help="seed of the crop positions")
    sample.add_argument("--out", required=True, help="path of the train_X.bin to write")
    download = commands.add_parser("download", help="download and verify the official STL-10 archive")
    download.add_argument("--url", required=True, help="URL of stl10_binary.tar.gz")
    download.add_argument("--md5", required=True, help="expected md5 of the archive")
    download.add_argument("--out", required=True, help="path of stl10_binary/train_X.bin to produce")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "sample":
        write_stl10_images(make_sample(args.n_images, args.seed), args.out)
    else:
        download_stl10(args.url, args.md5, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
