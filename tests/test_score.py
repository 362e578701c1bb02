"""Tests of the score stage on a really trained encoder and real images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mifeatures import provenance
from mifeatures.mi import mutual_information
from mifeatures.models import N_MAPS, build_encoder
from mifeatures.score import (SUMMARY_COLUMNS, all_images_loop_normalisation, batched_feature_maps,
                              feature_maps, load_encoder, main, noise_bound, per_image_encoder, score)


@pytest.fixture(scope="module")
def scored(trained_case):
    """Tables of the score stage for the trained case-a encoder over the 8 images."""
    _, encoder = load_encoder(trained_case["encoder"])
    encoder_images = np.load(trained_case["encoder_images"])
    sized_images = np.load(trained_case["sized_images"])
    return score(encoder, encoder_images, sized_images, bins=30, noise_seed=0)


def one_image_score(encoder, encoder_images, sized_images, bins, noise_seed):
    """The score stage as it was before batching: one image per forward pass and one table per image."""
    rows, summaries = [], []
    for index, image in enumerate(sized_images):
        maps = feature_maps(encoder, encoder_images[index])
        mi = mutual_information(image, maps, bins)
        loop = mutual_information(image, all_images_loop_normalisation(maps), bins)
        rows.append(pd.DataFrame({"image": index, "map": np.arange(len(mi)), "mi": mi,
                                  "mi_all_images": loop}))
        upper = float(mutual_information(image, image[None], bins)[0])
        summaries.append([index, upper, noise_bound(image, index, noise_seed, bins), loop.max(), loop.min(),
                          loop.mean(), loop.std()])
    return pd.concat(rows, ignore_index=True), pd.DataFrame(summaries, columns=SUMMARY_COLUMNS)


def test_feature_maps_use_each_images_own_batchnorm_statistics(trained_case, gray_images):
    """As the article scored, BatchNorm runs in training mode: running averages do not matter."""
    _, encoder = load_encoder(trained_case["encoder"])
    before = feature_maps(encoder, gray_images[0])
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(5.0)
            module.running_var.fill_(9.0)
    np.testing.assert_array_equal(feature_maps(encoder, gray_images[0]), before)
    assert before.shape == (N_MAPS, 88, 88) and before.min() >= 0


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batched_maps_are_the_one_image_maps(trained_case, gray_images, batch_size):
    """Chunks of a batch give, bit for bit, the maps each image gets on its own."""
    _, encoder = load_encoder(trained_case["encoder"])
    per_image = per_image_encoder(encoder, torch.device("cpu"))
    batched = np.concatenate([batched_feature_maps(per_image, gray_images[start : start + batch_size])
                              for start in range(0, len(gray_images), batch_size)])
    np.testing.assert_array_equal(batched, np.stack([feature_maps(encoder, image) for image in gray_images]))


@pytest.mark.parametrize("case", ["b", "c", "d"])
def test_batched_maps_are_the_one_image_maps_in_every_case(gray_images, case):
    """Padded and transposed convolutions too: on a CPU, torch runs b's and d's first layer with
    another kernel for a batch than for one image, and that must not show."""
    torch.manual_seed(0)
    encoder = build_encoder(case)
    with torch.no_grad():  # BatchNorm's affine parameters away from their initial 1 and 0
        for module in encoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    batched = batched_feature_maps(per_image_encoder(encoder, torch.device("cpu")), gray_images)
    np.testing.assert_array_equal(batched, np.stack([feature_maps(encoder, image) for image in gray_images]))


def test_batched_maps_leave_the_encoder_untouched(trained_case, gray_images):
    """Neither the weights nor BatchNorm's running statistics of the trained encoder change."""
    _, encoder = load_encoder(trained_case["encoder"])
    before = {name: tensor.clone() for name, tensor in encoder.state_dict().items()}
    batched_feature_maps(per_image_encoder(encoder, torch.device("cpu")), gray_images)
    for name, tensor in encoder.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0)


def test_tables_do_not_depend_on_the_batch_size(trained_case, scored):
    """Batches of 1, 3 and 8 images give exactly the tables of the one-image path."""
    _, encoder = load_encoder(trained_case["encoder"])
    encoder_images = np.load(trained_case["encoder_images"])
    sized_images = np.load(trained_case["sized_images"])
    expected = one_image_score(encoder, encoder_images, sized_images, bins=30, noise_seed=0)
    for batch_size in (1, 3, 8):
        table, summary = score(encoder, encoder_images, sized_images, bins=30, noise_seed=0,
                               batch_size=batch_size)
        pd.testing.assert_frame_equal(table, expected[0], check_exact=True)
        pd.testing.assert_frame_equal(summary, expected[1], check_exact=True)
    pd.testing.assert_frame_equal(scored[0], expected[0], check_exact=True)
    pd.testing.assert_frame_equal(scored[1], expected[1], check_exact=True)


def test_score_refuses_a_batch_size_below_one(trained_case, gray_images):
    """batch_size 0 would score nothing."""
    _, encoder = load_encoder(trained_case["encoder"])
    with pytest.raises(ValueError, match="batch_size must be ≥ 1, got 0"):
        score(encoder, gray_images, gray_images, bins=30, noise_seed=0, batch_size=0)


def test_tables_cover_every_image_and_map(scored, gray_images):
    """One MI row per (image, map) and one summary row per image, in order."""
    table, summary = scored
    assert len(table) == len(gray_images) * N_MAPS
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert summary["image"].tolist() == list(range(len(gray_images)))


def test_all_images_loop_normalises_per_column_across_maps(trained_case, gray_images):
    """As the article's loop computed it on NCHW maps: per column, jointly over maps and rows. That
    differs from a per-map min–max, which the histogram ignores (column ``mi``)."""
    _, encoder = load_encoder(trained_case["encoder"])
    maps = feature_maps(encoder, gray_images[0])
    batch = maps[None]  # the article's (1, 32, H, W)
    low, high = batch.min((0, 1, 2), keepdims=True), batch.max((0, 1, 2), keepdims=True)
    np.testing.assert_array_equal(all_images_loop_normalisation(maps), np.squeeze((batch - low) / (high - low + 1e-8)))
    per_map = (maps - maps.min((1, 2), keepdims=True)) / (np.ptp(maps, (1, 2), keepdims=True) + 1e-8)
    image = np.load(trained_case["sized_images"])[0]
    live = np.ptp(maps, axis=(1, 2)) > 0
    np.testing.assert_allclose(mutual_information(image, per_map, 30)[live], mutual_information(image, maps, 30)[live],
                               atol=1e-12)
    assert not np.allclose(mutual_information(image, all_images_loop_normalisation(maps), 30),
                           mutual_information(image, maps, 30), atol=1e-3)


def test_summary_agrees_with_the_per_map_table(scored):
    """max, min, mean and std of each image are those of its 32 MI values as the all-images loop had them."""
    table, summary = scored
    grouped = table.groupby("image")["mi_all_images"]
    np.testing.assert_allclose(summary["mean"], grouped.mean(), rtol=1e-12)
    np.testing.assert_allclose(summary["max"], grouped.max(), rtol=1e-12)
    np.testing.assert_allclose(summary["min"], grouped.min(), rtol=1e-12)
    np.testing.assert_allclose(summary["std"], grouped.std(ddof=0), rtol=1e-9)


def test_bounds_bracket_the_maps(scored, trained_case):
    """The upper bound is the image's own MI; no map beats it and noise stays far below."""
    _, summary = scored
    sized = np.load(trained_case["sized_images"])
    upper = [mutual_information(image, image[None], 30)[0] for image in sized]
    np.testing.assert_allclose(summary["upper"], upper)
    assert (summary["max"] <= summary["upper"]).all()
    assert (summary["noise"] < 0.2 * summary["upper"]).all()


def test_noise_bound_is_seeded_per_image(gray_images):
    """The same (seed, image) gives the same noise bound; another seed another one."""
    image = gray_images[0]
    assert noise_bound(image, 3, seed=0, bins=30) == noise_bound(image, 3, seed=0, bins=30)
    assert noise_bound(image, 3, seed=0, bins=30) != noise_bound(image, 3, seed=1, bins=30)


def test_cli_writes_both_tables(tmp_path, trained_case, scored):
    """The CLI writes the same tables as the library function, as CSV, and records the device it used."""
    mi_out, summary_out = tmp_path / "mi.csv", tmp_path / "summary.csv"
    main(["--encoder", str(trained_case["encoder"]), "--encoder-images", str(trained_case["encoder_images"]),
          "--sized-images", str(trained_case["sized_images"]), "--mi-out", str(mi_out),
          "--summary-out", str(summary_out), "--device", "auto", "--batch-size", "3"])
    pd.testing.assert_frame_equal(pd.read_csv(summary_out), scored[1], check_exact=False, rtol=1e-15)
    assert len(pd.read_csv(mi_out)) == len(scored[0])
    record = json.loads(provenance.sidecar(summary_out).read_text())
    assert record["environment"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert record["context"] == {"case": "a", "batch_size": 3}


def test_cli_rejects_bins_below_two(tmp_path, trained_case):
    """--bins 1 is a usage error."""
    with pytest.raises(SystemExit):
        main(["--encoder", str(trained_case["encoder"]), "--encoder-images", "x", "--sized-images", "y",
              "--bins", "1", "--mi-out", str(tmp_path / "m"), "--summary-out", str(tmp_path / "s")])


@pytest.mark.parametrize("batch_size", ["0", "-2"])
def test_cli_rejects_a_batch_size_below_one(tmp_path, trained_case, batch_size, capsys):
    """--batch-size must be a positive number of images."""
    with pytest.raises(SystemExit):
        main(["--encoder", str(trained_case["encoder"]), "--encoder-images", "x", "--sized-images", "y",
              "--batch-size", batch_size, "--mi-out", str(tmp_path / "m"),
              "--summary-out", str(tmp_path / "s")])
    assert f"--batch-size must be ≥ 1, got {batch_size}" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_refuses_cuda_without_a_gpu(tmp_path, trained_case, capsys):
    """--device cuda on a machine without CUDA is a usage error, not a silent fall-back to the CPU."""
    with pytest.raises(SystemExit):
        main(["--encoder", str(trained_case["encoder"]), "--encoder-images", "x", "--sized-images", "y",
              "--device", "cuda", "--mi-out", str(tmp_path / "m"), "--summary-out", str(tmp_path / "s")])
    assert "no CUDA device is available" in capsys.readouterr().err


def test_load_encoder_names_a_file_that_is_not_a_checkpoint(tmp_path):
    """A .pt without the train stage's keys is refused with its path."""
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="other.pt: not an encoder checkpoint"):
        load_encoder(path)
