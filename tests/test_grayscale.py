"""Grayscale stage on real photo crops: conversion, resizing, loading and the CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest
from skimage.transform import resize

from mifeatures.data import make_sample, write_stl10_images
from mifeatures.grayscale import load_images, main, resize_images, to_grayscale


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """Twelve real uint8 (96, 96, 3) photo crops."""
    return make_sample(12, 0)


@pytest.fixture(scope="module")
def gray(rgb) -> np.ndarray:
    """The grayscale stage's output for ``rgb``."""
    return to_grayscale(rgb)


def reference_gray(rgb: np.ndarray) -> np.ndarray:
    """(R + G + B) in integers, min–max scaled over the whole set: the same as mean(/255) then min–max."""
    total = rgb.astype(np.int64).sum(axis=-1)
    return (total - total.min()) / (total.max() - total.min())


def skimage_resized(gray: np.ndarray, size: int) -> np.ndarray:
    """skimage's default resize of every image, as float32."""
    return np.stack([resize(img, (size, size)) for img in gray]).astype(np.float32)


def test_to_grayscale_matches_reference(rgb, gray):
    """to_grayscale equals the RGB mean of uint8/255 min–max scaled over the dataset."""
    assert gray.shape == (12, 96, 96)
    assert gray.dtype == np.float32
    np.testing.assert_allclose(gray, reference_gray(rgb), rtol=0, atol=1e-6)
    explicit = (rgb / 255.0).mean(axis=-1)
    explicit = (explicit - explicit.min()) / (explicit.max() - explicit.min())
    np.testing.assert_allclose(gray, explicit, rtol=0, atol=1e-6)


def test_to_grayscale_range(gray):
    """The output lies in [0, 1] with min exactly 0 and max exactly 1."""
    assert gray.min() == 0.0
    assert gray.max() == 1.0
    assert np.all((gray >= 0) & (gray <= 1))


def test_to_grayscale_scales_over_whole_dataset(rgb):
    """The min–max is dataset-wide: a dim image keeps its max below 1 when a brighter one is present."""
    dim = (rgb[0] // 4).astype(np.uint8)
    bright = rgb[1]
    out = to_grayscale(np.stack([dim, bright]))
    assert out[0].max() < 1.0
    alone = to_grayscale(dim[None])
    assert alone.max() == 1.0  # scaled on its own, the dim image reaches 1
    assert not np.allclose(out[0], alone[0])


def test_constant_dataset_raises():
    """A dataset whose every pixel has the same gray value raises ValueError."""
    with pytest.raises(ValueError, match="same value"):
        to_grayscale(np.full((2, 96, 96, 3), 7, dtype=np.uint8))


def test_equal_gray_from_different_colours_raises():
    """Pure red and pure green pixels average to the same gray, so the set cannot be scaled."""
    images = np.zeros((1, 96, 96, 3), dtype=np.uint8)
    images[0, :48, :, 0] = 255
    images[0, 48:, :, 1] = 255
    with pytest.raises(ValueError, match="same value"):
        to_grayscale(images)


@pytest.mark.parametrize("size", [88, 104])
def test_resize_matches_skimage(gray, size):
    """resize_images equals skimage.transform.resize per image (defaults), as float32."""
    out = resize_images(gray, size)
    assert out.shape == (12, size, size)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, skimage_resized(gray, size))


def test_resize_to_own_size_is_equal_copy(gray):
    """Size 96 returns an equal float32 array that is a copy, not the input itself."""
    out = resize_images(gray, 96)
    assert out is not gray
    assert not np.shares_memory(out, gray)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, gray)


def test_load_images_round_trip(tmp_path, gray):
    """A float32 (N, S, S) array loads back unchanged, with and without a size check."""
    path = tmp_path / "gray.npy"
    np.save(path, gray)
    np.testing.assert_array_equal(load_images(str(path)), gray)
    np.testing.assert_array_equal(load_images(str(path), size=96), gray)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((2, 96, 96), dtype=np.float64),
        np.zeros((2, 96, 96), dtype=np.uint8),
        np.zeros((96, 96), dtype=np.float32),
        np.zeros((2, 1, 96, 96), dtype=np.float32),
        np.zeros((2, 96, 88), dtype=np.float32),
    ],
    ids=["float64", "uint8", "rank2", "rank4", "not-square"],
)
def test_load_images_rejects_bad_arrays(tmp_path, array):
    """Wrong dtype, rank or a non-square image raises ValueError naming the file path."""
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=re.escape(f"{path}: expected float32 (N, S, S)")):
        load_images(str(path))


def test_load_images_rejects_wrong_size(tmp_path, gray):
    """A 96×96 file loaded with size=88 raises ValueError naming the path and both sizes."""
    path = tmp_path / "gray96.npy"
    np.save(path, gray[:2])
    with pytest.raises(ValueError, match=re.escape(f"{path}: expected 88×88 images, got 96×96")):
        load_images(str(path), size=88)


def test_cli_writes_one_size_per_call(tmp_path, rgb, capsys):
    """main() reads a train_X.bin and writes the one size asked for, matching the references."""
    source = tmp_path / "train_X.bin"
    write_stl10_images(rgb, source)
    outputs = {size: tmp_path / f"gray{size}.npy" for size in (96, 88, 104)}
    for size, path in outputs.items():
        main([str(source), "--size", str(size), "--out", str(path)])
        assert f"wrote {path} (12 images, {size}×{size})" in capsys.readouterr().out
    got96 = load_images(str(outputs[96]), size=96)
    np.testing.assert_allclose(got96, reference_gray(rgb), rtol=0, atol=1e-6)
    for size in (88, 104):
        np.testing.assert_array_equal(load_images(str(outputs[size]), size=size), skimage_resized(got96, size))
    arrays = [path.name for path in outputs.values()]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["train_X.bin", *arrays, *(f"{name}.prov.json" for name in arrays)]
    )  # each array and its provenance record, nothing else (no leftover temporary files)


def test_cli_rejects_a_size_below_one(tmp_path, rgb, capsys):
    """--size 0 is an argparse error (SystemExit 2) naming the flag, and writes nothing."""
    source = tmp_path / "train_X.bin"
    write_stl10_images(rgb[:2], source)
    with pytest.raises(SystemExit) as exit_info:
        main([str(source), "--size", "0", "--out", str(tmp_path / "a.npy")])
    assert exit_info.value.code == 2
    assert "--size must be ≥ 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "a.npy").exists()
