"""Grayscale stage on real photo crops: conversion, resizing, loading and the CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest
from skimage.transform import resize

from mifeatures.stages.grayscale import main
from mifeatures.core.data.images import load_images, resize_images, to_grayscale
from mifeatures.core.data.sample import make_sample
from mifeatures.core.data.stl10 import write_stl10_images


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """Twelve real uint8 (96, 96, 3) photo crops."""
    return make_sample(12, 0)


@pytest.fixture(scope="module")
def gray(rgb) -> np.ndarray:
    """The grayscale stage's output for ``rgb``."""
    return to_grayscale(rgb)


def reference_gray(rgb: np.ndarray) -> np.ndarray:
    """The article's (x − min) / (max − min + 1e-8) of the grey levels (R + G + B) / 765, from integers."""
    total = rgb.astype(np.int64).sum(axis=-1)
    return (total - total.min()) / 765 / ((total.max() - total.min()) / 765 + 1e-8)


def resize_2019(image: np.ndarray, size: int) -> np.ndarray:
    """scikit-image 0.14.2's ``resize(image, (size, size))``, transcribed from that release's source
    (skimage/transform/_warps.py): output pixel o samples input coordinate factor · (o + 0.5) − 0.5,
    bilinearly, with 0 beyond the border (mode 'constant', cval 0) and no anti-aliasing."""
    side = image.shape[0]
    coords = side / size * (np.arange(size) + 0.5) - 0.5 + 1  # + 1: index into the zero-padded image
    low = np.floor(coords).astype(int)
    weights = np.zeros((size, side + 2))
    weights[np.arange(size), low] = 1 - (coords - low)
    weights[np.arange(size), low + 1] += coords - low
    return weights @ np.pad(image, 1) @ weights.T


def test_to_grayscale_matches_the_article(rgb, gray):
    """to_grayscale is the article's float64 grayscale: the RGB mean, min–max over the set with + 1e-8."""
    assert gray.shape == (12, 96, 96)
    assert gray.dtype == np.float64
    np.testing.assert_allclose(gray, reference_gray(rgb), rtol=0, atol=1e-15)


def test_to_grayscale_range(rgb, gray):
    """The output lies in [0, 1): min exactly 0, max short of 1 by the article's 1e-8 over the range."""
    total = rgb.astype(np.int64).sum(axis=-1)
    assert gray.min() == 0.0
    assert 1 - gray.max() == pytest.approx(1e-8 / ((total.max() - total.min()) / 765), rel=1e-6)


def test_to_grayscale_scales_over_whole_dataset(rgb):
    """The min–max is dataset-wide: a dim image keeps its max below 1 when a brighter one is present."""
    dim = (rgb[0] // 4).astype(np.uint8)
    bright = rgb[1]
    out = to_grayscale(np.stack([dim, bright]))
    assert out[0].max() < 0.5
    alone = to_grayscale(dim[None])
    assert alone.max() > 0.99  # scaled on its own, the dim image reaches the top
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
def test_resize_is_scikit_image_0_14(gray, size):
    """resize_images equals scikit-image 0.14.2's resize (the article's release), in float64."""
    out = resize_images(gray, size)
    assert out.shape == (12, size, size)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, np.stack([resize_2019(image, size) for image in gray]), rtol=0, atol=1e-12)


def test_the_2019_resize_differs_from_today_only_at_b_border(gray):
    """Today's defaults (anti-aliasing, reflection) change nothing at 88×88 (the filter's σ of 0.045 px
    is no filter), and at 104×104 only the outermost pixels, which sample beyond the image's border."""
    np.testing.assert_allclose(resize_images(gray, 88), [resize(image, (88, 88)) for image in gray],
                               rtol=0, atol=1e-12)
    difference = np.abs(resize_images(gray, 104) - [resize(image, (104, 104)) for image in gray])
    assert difference[:, 1:-1, 1:-1].max() < 1e-12
    assert difference.max() > 0.01


def test_resize_to_own_size_is_equal_copy(gray):
    """Size 96 returns an equal float64 array that is a copy, not the input itself."""
    out = resize_images(gray, 96)
    assert out is not gray
    assert not np.shares_memory(out, gray)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, gray)


def test_load_images_round_trip(tmp_path, gray):
    """A float64 (N, S, S) array loads back unchanged, with and without a size check."""
    path = tmp_path / "gray.npy"
    np.save(path, gray)
    np.testing.assert_array_equal(load_images(str(path)), gray)
    np.testing.assert_array_equal(load_images(str(path), size=96), gray)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((2, 96, 96), dtype=np.float32),
        np.zeros((2, 96, 96), dtype=np.uint8),
        np.zeros((96, 96), dtype=np.float64),
        np.zeros((2, 1, 96, 96), dtype=np.float64),
        np.zeros((2, 96, 88), dtype=np.float64),
    ],
    ids=["float32", "uint8", "rank2", "rank4", "not-square"],
)
def test_load_images_rejects_bad_arrays(tmp_path, array):
    """Wrong dtype, rank or a non-square image raises ValueError naming the file path."""
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=re.escape(f"{path}: expected float64 (N, S, S)")):
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
    np.testing.assert_allclose(got96, reference_gray(rgb), rtol=0, atol=1e-15)
    for size in (88, 104):
        np.testing.assert_allclose(load_images(str(outputs[size]), size=size),
                                   [resize_2019(image, size) for image in got96], rtol=0, atol=1e-12)
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
