"""Tests of the score stage on a really trained encoder and real images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from scipy.ndimage import gaussian_filter

from mifeatures.workflow import provenance
from mifeatures.stages.crosscheck import crosscheck, draw_pairs
from mifeatures.stages.crosscheck import main as crosscheck_main
from mifeatures.core.information.estimators import corrected_mi, miller_madow
from mifeatures.core.information.ksg import ksg_mi
from mifeatures.core.protocols import PROTOCOLS
from mifeatures.core.information.mi import mutual_information, noise_bound
from mifeatures.core.networks.models import build_encoder
from mifeatures.core.networks.shapes import INPUT_SIZE, N_MAPS, map_size
from mifeatures.core.information.corrected_scoring import (CORRECTED_SUMMARY_COLUMNS, corrected_estimates,
                                                           score_corrected)
from mifeatures.core.protocols import MISMATCHED
from mifeatures.core.information.maps import (as_trained, batched_feature_maps, eval_encoder, feature_maps,
                                              load_encoder, per_image_encoder, to_image_grid, training_batch_size,
                                              valid_region)
from mifeatures.stages.maps import main as maps_main
from mifeatures.stages.score import main
from mifeatures.core.information.scoring import SUMMARY_COLUMNS, all_images_loop_normalisation, score


# What the rule passes from params.yaml, and the faithful protocol; a test's own --protocol comes later and wins.
PARAMS = ["--protocol", "faithful", "--bins", "30", "--noise-seed", "0", "--device", "cpu"]

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
    main([*PARAMS, "--encoder", str(trained_case["encoder"]), "--encoder-images", str(trained_case["encoder_images"]),
          "--sized-images", str(trained_case["sized_images"]), "--mi-out", str(mi_out),
          "--summary-out", str(summary_out), "--device", "auto", "--batch-size", "3"])
    pd.testing.assert_frame_equal(pd.read_csv(summary_out), scored[1], check_exact=False, rtol=1e-15)
    assert len(pd.read_csv(mi_out)) == len(scored[0])
    record = json.loads(provenance.sidecar(summary_out).read_text())
    assert record["environment"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert record["context"] == {"case": "a", "protocol": "faithful", "batch_size": 3}


def test_cli_rejects_bins_below_two(tmp_path, trained_case):
    """--bins 1 is a usage error."""
    with pytest.raises(SystemExit):
        main([*PARAMS, "--encoder", str(trained_case["encoder"]), "--encoder-images", "x", "--sized-images", "y",
              "--bins", "1", "--mi-out", str(tmp_path / "m"), "--summary-out", str(tmp_path / "s")])


@pytest.mark.parametrize("batch_size", ["0", "-2"])
def test_cli_rejects_a_batch_size_below_one(tmp_path, trained_case, batch_size, capsys):
    """--batch-size must be a positive number of images."""
    with pytest.raises(SystemExit):
        main([*PARAMS, "--encoder", str(trained_case["encoder"]), "--encoder-images", "x", "--sized-images", "y",
              "--batch-size", batch_size, "--mi-out", str(tmp_path / "m"),
              "--summary-out", str(tmp_path / "s")])
    assert f"--batch-size must be ≥ 1, got {batch_size}" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_refuses_cuda_without_a_gpu(tmp_path, trained_case, capsys):
    """--device cuda on a machine without CUDA is a usage error, not a silent fall-back to the CPU."""
    with pytest.raises(SystemExit):
        main([*PARAMS, "--encoder", str(trained_case["encoder"]), "--encoder-images", "x", "--sized-images", "y",
              "--device", "cuda", "--mi-out", str(tmp_path / "m"), "--summary-out", str(tmp_path / "s")])
    assert "no CUDA device is available" in capsys.readouterr().err


def test_maps_cli_refuses_an_image_outside_the_images(tmp_path, trained_case, capsys):
    """A maps figure of an image the split does not have (figures.images, or a target's index) is a usage error
    naming the images there are, before any output is written."""
    with pytest.raises(SystemExit):
        maps_main([*PARAMS, "--encoder", str(trained_case["encoder"]),
                   "--encoder-images", str(trained_case["encoder_images"]),
                   "--sized-images", str(trained_case["sized_images"]), "--image", "99",
                   "--maps-out", str(tmp_path / "x"), "--bounds-out", str(tmp_path / "b")])
    assert "--image 99: there is no such image; " in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_load_encoder_names_a_file_that_is_not_a_checkpoint(tmp_path):
    """A .pt without the train stage's keys is refused with its path."""
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="other.pt: not an encoder checkpoint"):
        load_encoder(path)


# The corrected protocol.


@pytest.fixture(scope="module")
def scored_corrected(trained_case):
    """Corrected tables of the trained case-a encoder over the 8 images, 4 null shifts: the network as trained,
    its BatchNorm statistics recomputed over those images in its training batches, as the score stage does."""
    return score_corrected(as_trained_encoder(trained_case), "a", np.load(trained_case["encoder_images"]), bins=30,
                           noise_seed=0, null_shifts=4, null_seed=0)


def as_trained_encoder(trained_case) -> torch.nn.Module:
    _, encoder = load_encoder(trained_case["encoder"])
    return as_trained(encoder, np.load(trained_case["encoder_images"]), training_batch_size(trained_case["encoder"]))


def encoder_with_random_statistics(case):
    """A case's encoder, seeded, its BatchNorm affine parameters and running statistics away from 1 and 0."""
    torch.manual_seed(0)
    encoder = build_encoder(case)
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return encoder


def identity_encoder(case):
    """A case's encoder that passes the image through every layer: centre taps of 1 (the image on
    every channel), no bias, BatchNorm in eval mode an identity up to its eps. Its maps are the image
    as the case's geometry moves it."""
    encoder = build_encoder(case)
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.weight.zero_()
                taps = module.weight[:, :, 1, 1]
                taps.copy_(torch.eye(N_MAPS) if taps.shape == (N_MAPS, N_MAPS) else torch.ones_like(taps))
                module.bias.zero_()
    return encoder


def test_eval_maps_follow_the_running_statistics(trained_case, gray_images):
    """In eval mode BatchNorm uses the running statistics learnt in training: other statistics, other maps."""
    _, encoder = load_encoder(trained_case["encoder"])
    before = batched_feature_maps(eval_encoder(encoder, torch.device("cpu")), gray_images)
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(5.0)
            module.running_var.fill_(9.0)
    after = batched_feature_maps(eval_encoder(encoder, torch.device("cpu")), gray_images)
    assert before.shape == (len(gray_images), N_MAPS, 88, 88)
    assert not np.allclose(after, before, atol=1e-3)


def normalised_sds(encoder: torch.nn.Module, images: np.ndarray) -> list[np.ndarray]:
    """Per BatchNorm layer of ``encoder`` in eval mode: each channel's SD, over ``images`` and pixels, of its
    input normalised by the running statistics: 1 where they are the statistics of what it normalises."""
    sds, hooks = [], []

    def record(module, inputs, _):
        scale = torch.sqrt(module.running_var + module.eps)[:, None, None]
        normalised = (inputs[0] - module.running_mean[:, None, None]) / scale
        sds.append(normalised.transpose(0, 1).flatten(1).std(dim=1).numpy())

    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            hooks.append(module.register_forward_hook(record))
    batched_feature_maps(eval_encoder(encoder, torch.device("cpu")), images)
    for hook in hooks:
        hook.remove()
    return sds


def test_eval_mode_scores_the_network_as_trained(trained_case, gray_images):
    """After a short training, BatchNorm's running statistics still hold most of their initial 0 and 1 (momentum
    0.1), so eval mode normalised with statistics no training batch had: one cumulative pass over the training
    images recomputes them, and every channel's normalised input then has SD ≈ 1 on those images."""
    _, encoder = load_encoder(trained_case["encoder"])
    stale = normalised_sds(encoder, gray_images)
    assert min(float(np.median(layer)) for layer in stale) < 0.5
    recomputed = as_trained(encoder, gray_images, batch_size=4)
    for layer in normalised_sds(recomputed, gray_images):
        assert 0.8 < float(np.median(layer)) < 1.25, layer
    # the copy changed, the encoder given did not
    assert not torch.equal(recomputed.state_dict()["b1.running_var"], encoder.state_dict()["b1.running_var"])


@pytest.mark.parametrize("case", ["a", "b", "c", "d"])
def test_eval_maps_ignore_the_other_images_of_the_batch(gray_images, case):
    """An image's eval-mode maps are the same bits whichever images share its batch and however many,
    and those of ``encoder.eval()`` on the image alone: no per-image statistics, and every convolution
    one image's kernel."""
    encoder = encoder_with_random_statistics(case)
    model = eval_encoder(encoder, torch.device("cpu"))
    batch = batched_feature_maps(model, gray_images)
    others = batched_feature_maps(model, np.concatenate([gray_images[:1], gray_images[:0:-1]]))
    np.testing.assert_array_equal(others[0], batch[0])
    with torch.no_grad():
        alone = [encoder.eval()(torch.as_tensor(image, dtype=torch.float32)[None, None])[0].numpy()
                 for image in gray_images]
    np.testing.assert_array_equal(batch, np.stack(alone))


@pytest.mark.parametrize("case", ["a", "b", "c", "d"])
def test_to_image_grid_puts_the_maps_over_the_image(gray_images, case):
    """Through an encoder that passes the image along, each case's maps brought onto the 96×96 grid
    are the image itself wherever the map has content (a: the central 88×88, its 4-px frame the
    map's edge values repeated)."""
    maps = batched_feature_maps(eval_encoder(identity_encoder(case), torch.device("cpu")), gray_images[:2])
    grid = to_image_grid(maps, case)
    assert grid.shape == (2, N_MAPS, INPUT_SIZE, INPUT_SIZE)
    border = (INPUT_SIZE - map_size(case)) // 2 if case == "a" else 0
    inside = np.s_[border : INPUT_SIZE - border]
    expected = np.broadcast_to(gray_images[:2, None], grid.shape)
    np.testing.assert_allclose(grid[..., inside, inside], expected[..., inside, inside], rtol=1e-4, atol=1e-6)
    if case == "a":
        np.testing.assert_array_equal(grid, np.pad(maps, [(0, 0), (0, 0), (4, 4), (4, 4)], mode="edge"))


def test_case_a_on_the_image_grid_correlates_best_unshifted(gray_images):
    """A map equal to the image's central 88×88, padded back, lines up with the image at zero shift
    and no other within ±6 px."""
    image = gray_images[0]
    grid = to_image_grid(image[4:92, 4:92], "a")
    correlation = {(dy, dx): np.corrcoef(np.roll(grid, (dy, dx), axis=(0, 1)).ravel(), image.ravel())[0, 1]
                   for dy in range(-6, 7) for dx in range(-6, 7)}
    assert max(correlation, key=correlation.get) == (0, 0)


@pytest.mark.parametrize(("maps_shape", "size", "message"), [
    ((32, 88, 88), "c", r"maps must end in \(96, 96\)"),
    ((32, 95, 95), 95, "no centred place"),
])
def test_to_image_grid_refuses_maps_of_another_size(maps_shape, size, message):
    """Maps of another case, or a size no encoder of these layers makes, are refused."""
    with pytest.raises(ValueError, match=message):
        to_image_grid(np.zeros(maps_shape, np.float32), size)


def test_corrected_mi_of_an_independent_smooth_field_is_near_zero(gray_images):
    """Against a smooth field independent of the image, the plug-in MI (here 0.08–0.10 nats, above
    even the 0.046 of independent pixels) and Miller–Madow's stay well above 0; the plug-in minus
    the spatial null is ≈ 0 (within the noise of an 8-shift null). A map made from the image keeps
    a large corrected MI."""
    image = gray_images[0]
    rng = np.random.default_rng(0)
    fields = np.stack([gaussian_filter(rng.standard_normal(image.shape), 3.0) for _ in range(3)])
    maps = np.concatenate([fields, gaussian_filter(image, 1.0)[None]]).astype(np.float32)
    plug_in, madow, corrected = (estimate[0]
                                 for estimate in corrected_estimates(image[None], maps[None], 30, 8, 0))
    assert (plug_in[:3] > 0.07).all() and (madow[:3] > 0.04).all()
    assert (np.abs(corrected[:3]) < 0.025).all()
    assert corrected[3] > 1.0
    np.testing.assert_array_equal(plug_in, mutual_information(image, maps, 30))
    np.testing.assert_array_equal(madow, miller_madow(image, maps, 30))
    np.testing.assert_allclose(corrected, corrected_mi(image, maps, 30, 8, 0), rtol=0, atol=1e-12)


def test_corrected_tables_cover_every_image_and_map(scored_corrected, gray_images):
    """One row per (image, map) with the three estimates on the grid and on the valid region, one summary
    row per image."""
    table, summary = scored_corrected
    assert list(table.columns) == ["image", "map", "mi", "mi_miller_madow", "mi_corrected", "mi_valid",
                                   "mi_valid_miller_madow", "mi_valid_corrected", "mi_valid_corrected_mismatched"]
    assert len(table) == len(gray_images) * N_MAPS
    assert list(summary.columns) == CORRECTED_SUMMARY_COLUMNS
    assert summary["image"].tolist() == list(range(len(gray_images)))


def test_corrected_summary_agrees_with_the_table(scored_corrected, gray_images):
    """max … std over mi_corrected, the means of the two other estimates, bounds on the 96×96 image."""
    table, summary = scored_corrected
    grouped = table.groupby("image")
    np.testing.assert_allclose(summary["mean_corrected"], grouped["mi_corrected"].mean(), rtol=1e-12)
    np.testing.assert_allclose(summary["max_corrected"], grouped["mi_corrected"].max(), rtol=1e-12)
    np.testing.assert_allclose(summary["min_corrected"], grouped["mi_corrected"].min(), rtol=1e-12)
    np.testing.assert_allclose(summary["std_corrected"], grouped["mi_corrected"].std(ddof=0), rtol=1e-9)
    np.testing.assert_allclose(summary["mean_plugin"], grouped["mi"].mean(), rtol=1e-12)
    np.testing.assert_allclose(summary["mean_miller_madow"], grouped["mi_miller_madow"].mean(), rtol=1e-12)
    for column in ("plugin", "miller_madow", "corrected", "corrected_mismatched"):
        source = {"plugin": "mi_valid"}.get(column, f"mi_valid_{column}")
        np.testing.assert_allclose(summary[f"mean_valid_{column}"], grouped[source].mean(), rtol=1e-12)
    np.testing.assert_array_equal(summary["upper"], [mutual_information(image, image[None], 30)[0]
                                                     for image in gray_images])
    np.testing.assert_array_equal(summary["noise"], [noise_bound(image, index, 0, 30)
                                                     for index, image in enumerate(gray_images)])
    assert (summary["max_corrected"] <= summary["upper"]).all()
    assert (summary["mean_corrected"] < summary["mean_miller_madow"]).all()
    assert (summary["mean_miller_madow"] < summary["mean_plugin"]).all()


def test_corrected_tables_are_reproducible(trained_case, scored_corrected):
    """The same seeds give the same tables, in any batch size; another null seed moves only mi_corrected."""
    encoder = as_trained_encoder(trained_case)
    images = np.load(trained_case["encoder_images"])
    for batch_size in (1, 3, 8):
        table, summary = score_corrected(encoder, "a", images, bins=30, noise_seed=0, null_shifts=4,
                                         null_seed=0, batch_size=batch_size)
        pd.testing.assert_frame_equal(table, scored_corrected[0], check_exact=True)
        pd.testing.assert_frame_equal(summary, scored_corrected[1], check_exact=True)
    reseeded, _ = score_corrected(encoder, "a", images, bins=30, noise_seed=0, null_shifts=4, null_seed=1)
    unseeded = ["image", "map", "mi", "mi_miller_madow"]
    pd.testing.assert_frame_equal(reseeded[unseeded], scored_corrected[0][unseeded], check_exact=True)
    assert not reseeded["mi_corrected"].equals(scored_corrected[0]["mi_corrected"])


@pytest.mark.parametrize(("null_shifts", "batch_size", "message"), [
    (0, 8, "shifts must be 1 … 2401"), (2402, 8, "shifts must be 1 … 2401"),
    (4, 0, "batch_size must be ≥ 1")])
def test_score_corrected_refuses_bad_arguments(trained_case, gray_images, null_shifts, batch_size, message):
    """A null of no shifts or of more shifts than the grid allows, or an empty batch, is refused up front."""
    _, encoder = load_encoder(trained_case["encoder"])
    with pytest.raises(ValueError, match=message):
        score_corrected(encoder, "a", gray_images, bins=30, noise_seed=0, null_shifts=null_shifts,
                        batch_size=batch_size)


def test_cli_corrected_writes_both_tables(tmp_path, trained_case, scored_corrected):
    """--protocol corrected writes the library's tables from the 96×96 images alone and records the
    protocol and the null's parameters."""
    mi_out, summary_out = tmp_path / "mi.csv", tmp_path / "summary.csv"
    main([*PARAMS, "--encoder", str(trained_case["encoder"]), "--encoder-images", str(trained_case["encoder_images"]),
          "--protocol", "corrected", "--null-shifts", "4", "--null-seed", "0", "--mi-out", str(mi_out),
          "--summary-out", str(summary_out), "--batch-size", "3"])
    for written, expected in ((mi_out, scored_corrected[0]), (summary_out, scored_corrected[1])):
        pd.testing.assert_frame_equal(pd.read_csv(written), expected, check_exact=False, rtol=1e-15)
    record = json.loads(provenance.sidecar(summary_out).read_text())
    assert record["params"] == {"score.bins": 30, "score.noise_seed": 0,
                                "score.null_shifts": 4, "score.null_seed": 0}
    assert record["context"]["protocol"] == "corrected"
    assert record["context"]["batchnorm_statistics"] == "recomputed over the 8 images in batches of 4"
    assert set(record["inputs"]) == {"encoder", "encoder_images"}


def test_cli_records_the_faithful_protocol(tmp_path, trained_case):
    """The faithful protocol is recorded as such, with no null parameters."""
    summary_out = tmp_path / "summary.csv"
    main([*PARAMS, "--encoder", str(trained_case["encoder"]), "--encoder-images", str(trained_case["encoder_images"]),
          "--sized-images", str(trained_case["sized_images"]), "--mi-out", str(tmp_path / "mi.csv"),
          "--summary-out", str(summary_out)])
    record = json.loads(provenance.sidecar(summary_out).read_text())
    assert record["params"] == {"score.bins": 30, "score.noise_seed": 0}
    assert record["context"]["protocol"] == "faithful"
    assert set(record["inputs"]) == {"encoder", "encoder_images", "sized_images"}


@pytest.mark.parametrize(("arguments", "message"), [
    ([], "--sized-images: the faithful protocol needs it"),
    (["--sized-images", "y", "--null-shifts", "4"], "--null-shifts: the faithful protocol does not take it"),
    (["--sized-images", "y", "--null-seed", "1"], "--null-seed: the faithful protocol does not take it"),
    (["--protocol", "corrected", "--sized-images", "y"], "--sized-images: the corrected protocol does not take it"),
    (["--protocol", "corrected", "--null-shifts", "0", "--null-seed", "0"], "--null-shifts: shifts must be 1 … 2401"),
    (["--protocol", "corrected", "--null-shifts", "4", "--null-seed", "-1"], "--null-seed must be ≥ 0, got -1"),
    (["--protocol", "corrected", "--null-shifts", "4"], "--null-seed: the corrected protocol needs it"),
])
def test_cli_states_what_each_protocol_needs(tmp_path, trained_case, arguments, message, capsys):
    """Each protocol's inputs and parameters are usage errors when missing or misplaced."""
    with pytest.raises(SystemExit):
        main([*PARAMS, "--encoder", str(trained_case["encoder"]), "--encoder-images", "x", *arguments,
              "--mi-out", str(tmp_path / "m"), "--summary-out", str(tmp_path / "s")])
    assert message in capsys.readouterr().err


# The KSG cross-check (mifeatures.stages.crosscheck).


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_crosscheck_estimates_the_pairs_the_protocol_scores(tmp_path, trained_case, protocol):
    """The cross-check draws the same pairs for any encoder, and its KSG values and nulls are those of
    ksg_mi on the protocol's own (reference image, map) pairs: the map size against the resized image
    (faithful), the valid region of the 96×96 grid against the image's own (corrected), where its primary score
    is."""
    _, encoder = load_encoder(trained_case["encoder"])
    images = np.load(trained_case["encoder_images"])
    sized = np.load(trained_case["sized_images"]) if protocol == "faithful" else None
    table = crosscheck(encoder, "a", PROTOCOLS[protocol], images, sized, images=3, maps=2, pixels=500, neighbors=3,
                       seed=1, null_shifts=2)
    chosen_images, chosen_maps = draw_pairs(len(images), 3, 2, seed=1)
    assert table[["image", "map"]].values.tolist() == [[i, k] for i in chosen_images for k in chosen_maps]
    first = chosen_images[0]
    if protocol == "faithful":
        reference, maps = sized[first], feature_maps(encoder, images[first])
    else:
        reference = valid_region(images[first])
        grid = to_image_grid(batched_feature_maps(eval_encoder(encoder, torch.device("cpu")), images[[first]]), "a")
        maps = valid_region(grid)[0]
    ksg, null = ksg_mi(reference, maps[chosen_maps], n_neighbors=3, sample=500, seed=1, shifts=2)
    np.testing.assert_allclose(table["ksg"].to_numpy()[:2], ksg, rtol=1e-12)
    np.testing.assert_allclose(table["ksg_null"].to_numpy()[:2], null, rtol=1e-12)
    np.testing.assert_allclose(table["ksg_corrected"], table["ksg"] - table["ksg_null"], rtol=0, atol=1e-15)
    assert table["ksg"].max() > 0


def test_crosscheck_cli_records_its_params_and_refuses_a_misplaced_input(tmp_path, trained_case, capsys):
    out = tmp_path / "ksg.csv"
    common = ["--encoder", str(trained_case["encoder"]), "--encoder-images", str(trained_case["encoder_images"]),
              "--images", "2", "--maps", "2", "--pixels", "300", "--neighbors", "3", "--seed", "0",
              "--null-shifts", "2",
              "--device", "cpu", "--out", str(out)]
    with pytest.raises(SystemExit):
        crosscheck_main([*common, "--protocol", "corrected", "--sized-images", str(trained_case["sized_images"])])
    assert "--sized-images: the corrected protocol does not take it" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        crosscheck_main([*common, "--protocol", "faithful"])
    assert "--sized-images: the faithful protocol needs it" in capsys.readouterr().err
    crosscheck_main([*common, "--protocol", "corrected"])
    record = json.loads(provenance.sidecar(out).read_text())
    assert record["context"] == {"case": "a", "protocol": "corrected",
                                 "batchnorm_statistics": "recomputed over the 8 images in batches of 4"}
    assert record["params"] == {"score.ksg.images": 2, "score.ksg.maps": 2, "score.ksg.pixels": 300,
                                "score.ksg.neighbors": 3, "score.ksg.seed": 0, "score.ksg.null_shifts": 2}
    assert len(pd.read_csv(out)) == 4


def test_common_grid_decides_c_minus_a(trained_case, gray_images):
    """Cases a and c have the same parameter shapes, so with shared weights they are one network, and the
    corrected protocol (eval mode) gives c's map over the central 88×88 exactly a's map: on the valid
    region the two tie to the last bit, while on the whole 96×96 grid the frames (c's zero padding, a's
    repeated edge) make them differ, which is what c − a measured there."""
    _, encoder_a = load_encoder(trained_case["encoder"])
    encoder_c = build_encoder("c")
    encoder_c.load_state_dict(encoder_a.state_dict())
    scored = {case: score_corrected(encoder, case, gray_images, 30, 0)[0]
              for case, encoder in (("a", encoder_a), ("c", encoder_c))}
    for column in ("mi_valid", "mi_valid_miller_madow", "mi_valid_corrected"):
        np.testing.assert_array_equal(scored["a"][column], scored["c"][column])
    assert np.abs(scored["a"]["mi"] - scored["c"]["mi"]).mean() > 1e-3


def test_valid_region_is_the_estimate_on_the_central_88_pixels(trained_case, scored_corrected, gray_images):
    """Every case's valid-region MI is the corrected estimate of the image's and the grid map's central
    88×88, with the spatial null drawn at that size."""
    table, _ = scored_corrected
    case, encoder = "a", as_trained_encoder(trained_case)
    maps = to_image_grid(batched_feature_maps(eval_encoder(encoder, torch.device("cpu")), gray_images[:2]), case)
    expected = corrected_estimates(valid_region(gray_images[:2]), valid_region(maps), 30, 4, 0)
    first = table[table["image"] < 2]
    for column, values in zip(("mi_valid", "mi_valid_miller_madow", "mi_valid_corrected"), expected):
        np.testing.assert_array_equal(first[column].to_numpy(), values.ravel())
    assert valid_region(gray_images).shape[-2:] == (88, 88)


def test_mismatched_image_control_averages_several_unrelated_images(trained_case, scored_corrected, gray_images):
    """The control scored image i's maps against image i + 1 alone, whose chance layout could leave +0.13 nats
    on its own: it now averages the next MISMATCHED images (the last image's: the first ones), each scored as
    the primary score does, and stays far below the matched MI."""
    table, summary = scored_corrected
    case, encoder = "a", as_trained_encoder(trained_case)
    maps = to_image_grid(batched_feature_maps(eval_encoder(encoder, torch.device("cpu")), gray_images[-1:]), case)
    each = [corrected_estimates(valid_region(gray_images[k:k + 1]), valid_region(maps), 30, 4, 0)[2]
            for k in range(MISMATCHED)]
    np.testing.assert_allclose(table[table["image"] == len(gray_images) - 1]["mi_valid_corrected_mismatched"],
                               np.mean(each, axis=0).ravel(), rtol=1e-12)
    assert summary["mean_valid_corrected_mismatched"].abs().mean() < 0.2 * summary["mean_valid_corrected"].mean()


def test_each_protocol_names_columns_its_scorer_writes(scored, scored_corrected):
    """A protocol's estimators, controls and histogram are columns its own scorer writes, and the column
    names of the two scorers' summaries mean one thing each: only the bounds are shared."""
    for protocol, (table, summary) in ((PROTOCOLS["faithful"], scored), (PROTOCOLS["corrected"], scored_corrected)):
        assert {*protocol.estimators.values(), *protocol.controls.values()} <= set(summary.columns)
        assert protocol.histogram in table.columns
    assert set(scored[1].columns) & set(scored_corrected[1].columns) == {"image", "upper", "noise"}
