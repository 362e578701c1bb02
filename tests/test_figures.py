"""Tests of the figures stage: every CLI figure becomes a valid PNG from real stage outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mifeatures.core.statistics.aggregation import per_case, per_image
from mifeatures.stages.figures import image_source, main, maps_figure
from mifeatures.core.information.maps import feature_maps, load_encoder, protocol_maps
from mifeatures.core.information.scoring import image_bounds
from mifeatures.core.protocols import PROTOCOLS
from mifeatures.core.information.mi import mutual_information, noise_bound
from mifeatures.stages.maps import main as maps_main
from mifeatures.stages.score import main as score_main


@pytest.fixture(scope="module")
def stage_outputs(tmp_path_factory, trained_case):
    """The score stage's outputs of the trained case a, the maps stage's of its images 1 and 3, and aggregate
    tables of it reused as two cases for the combined charts."""
    folder = tmp_path_factory.mktemp("figures")
    paths = dict(trained_case, **{name: folder / f"{name}.{ext}" for name, ext in (
        ("mi", "csv"), ("summary", "csv"), ("cases", "csv"))})
    common = ["--protocol", "faithful", "--encoder", str(trained_case["encoder"]),
              "--encoder-images", str(trained_case["encoder_images"]),
              "--sized-images", str(trained_case["sized_images"]), "--bins", "30", "--noise-seed", "0",
              "--device", "cpu"]
    score_main([*common, "--mi-out", str(paths["mi"]), "--summary-out", str(paths["summary"])])
    for image in (1, 3):
        paths[f"maps{image}"], paths[f"bounds{image}"] = folder / f"image{image}.npy", folder / f"image{image}.csv"
        maps_main([*common, "--image", str(image), "--maps-out", str(paths[f"maps{image}"]),
                   "--bounds-out", str(paths[f"bounds{image}"])])
    summary = pd.read_csv(paths["summary"])
    summaries = {"a": summary, "c": summary.assign(mean=summary["mean"] / 2)}
    per_case(summaries, per_image(summaries, "mean")).to_csv(paths["cases"], index=False)
    return paths


def assert_png(path, min_size=(300, 200)):
    """``path`` is a complete PNG of at least ``min_size`` pixels that is not one flat colour."""
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        assert np.unique(np.asarray(image.convert("L"))).size > 10


def test_every_figure_is_written(tmp_path, stage_outputs):
    """loss, maps, chosen, distribution and wins each produce a real PNG."""
    s = stage_outputs
    pairs = [f"a={s['summary']}", f"c={s['summary']}"]
    commands = {
        "loss": ["loss", f"a={s['loss']}", f"c={s['loss']}", "--data", str(tmp_path / "loss.csv")],
        "maps": ["maps", "--maps", str(s["maps3"]), "--bounds", str(s["bounds3"]),
                 "--encoder-images", str(s["encoder_images"]), "--mi", str(s["mi"]), "--image", "3", "--case", "a",
                 "--dataset", "sample", "--order", "index"],
        "chosen": ["chosen", *pairs, "--images", "1", "3"],
        "distribution": ["distribution", *pairs],
        "wins": ["wins", "--cases", str(s["cases"]), "--win-by", "mean"],
    }
    for name, args in commands.items():
        main(args + ["--out", str(tmp_path / f"{name}.png")])
        assert_png(tmp_path / f"{name}.png")
    for name in commands:  # about 40 % of each maps figure was blank margin
        assert blank_share(tmp_path / f"{name}.png") < 0.2, name
    # The loss figure's data, which dvc.yaml plots: every step of each case, as the run logged it.
    data, logged = pd.read_csv(tmp_path / "loss.csv"), pd.read_csv(s["loss"])
    assert list(data.columns) == ["case", "step", "epoch", "loss"] and list(data["case"].unique()) == ["a", "c"]
    for case in ("a", "c"):
        pd.testing.assert_frame_equal(data[data["case"] == case].drop(columns="case").reset_index(drop=True),
                                      logged[["step", "epoch", "loss"]])


def blank_share(path) -> float:
    """The share of a PNG's area in rows or columns that are white from edge to edge."""
    with Image.open(path) as image:
        white = np.asarray(image.convert("L")) == 255
    rows, columns = white.all(axis=1), white.all(axis=0)
    return 1 - (1 - rows.mean()) * (1 - columns.mean())


def test_maps_ordered_by_mi_go_highest_first_each_named(stage_outputs):
    """figures.maps_order: mi draws the maps highest MI first, each titled with its index and MI, and says so;
    each map stays with its own MI."""
    rows = pd.read_csv(stage_outputs["mi"]).query("image == 0")
    mi, loop = rows["mi"].to_numpy(), rows["mi_all_images"].to_numpy()
    maps = np.stack([np.full((88, 88), float(k)) for k in range(32)])  # map k is all k: where it lands shows
    figure = maps_figure(np.zeros((88, 88)), maps, mi, loop, upper=2.0, noise=0.05, case="a", image_index=10,
                         source=image_source("sample", 10), order="mi")
    shown = [int(axis.get_images()[0].get_array()[0, 0]) for axis in figure.axes[1:]]
    assert sorted(shown) == list(range(32)) and list(mi[shown]) == sorted(mi, reverse=True)
    assert [axis.get_title() for axis in figure.axes[1:]] == [f"map {k}: {mi[k]:.2f}" for k in shown]
    assert "highest MI first" in figure._suptitle.get_text()


def test_maps_figure_titles_each_map_with_its_mi(stage_outputs):
    """The grid has the image plus 32 maps, titled with the MI to 2 decimals. "Mean MI, case a, image 10" was
    0.146 here and 0.126 in chosen_mean_mi.png, neither naming its normalisation: the title gives both, each
    named, and the image names its source."""
    table = pd.read_csv(stage_outputs["mi"])
    rows = table.loc[table["image"] == 0]
    mi, loop = rows["mi"].to_numpy(), rows["mi_all_images"].to_numpy()
    maps = np.random.default_rng(0).random((32, 88, 88))
    figure = maps_figure(np.zeros((88, 88)), maps, mi, loop, upper=2.0, noise=0.05, case="a", image_index=10,
                         source=image_source("sample", 10))
    titles = [axis.get_title() for axis in figure.axes[1:]]
    assert titles == [f"{value:.2f}" for value in mi]
    title = figure._suptitle.get_text()
    assert f"mean MI {mi.mean():.3f} nats over 32 maps, each map min–max scaled on its own" in title
    assert f"{loop.mean():.3f} with the maps scaled as the article's all-images loop (chosen_mean_mi.png)" in title
    assert "2.00" in figure.axes[0].get_title() and "0.05" in figure.axes[0].get_title()
    assert "sample image 10:\na crop of scikit-image's 'moon' photo" in figure.axes[0].get_title()


def test_maps_cli_refuses_another_images_maps(tmp_path, stage_outputs, capsys):
    """Maps of another image than --image are a usage error naming the image they are of; no PNG."""
    s = stage_outputs
    with pytest.raises(SystemExit):
        main(["maps", "--maps", str(s["maps1"]), "--bounds", str(s["bounds1"]),
              "--encoder-images", str(s["encoder_images"]), "--mi", str(s["mi"]), "--image", "2", "--case", "a",
              "--dataset", "sample", "--order", "index", "--out", str(tmp_path / "maps.png")])
    assert "--image 2: --maps and --bounds are those of image 1" in capsys.readouterr().err
    assert not (tmp_path / "maps.png").exists()


@pytest.mark.parametrize("image", [1, 3])
def test_the_maps_stage_writes_the_maps_the_article_drew(stage_outputs, image):
    """The maps the figure draws are those of the article's one-image scoring, bit for bit, and the score stage's
    batch of the figures' images gave the same (the maps it wrote before the maps stage existed)."""
    _, encoder = load_encoder(stage_outputs["encoder"])
    images = np.load(stage_outputs["encoder_images"])
    written = np.load(stage_outputs[f"maps{image}"])
    assert written.dtype == np.float32 and written.shape == (1, 32, 88, 88)
    np.testing.assert_array_equal(written[0], feature_maps(encoder, images[image]))
    sized = np.load(stage_outputs["sized_images"])
    _, batch = protocol_maps(encoder, "a", PROTOCOLS["faithful"], images[[1, 3]], sized[[1, 3]])
    np.testing.assert_array_equal(written[0], batch[(1, 3).index(image)])
    bounds = pd.read_csv(stage_outputs[f"bounds{image}"])
    batch_bounds = image_bounds(images[[1, 3]], [1, 3], 30, 0)
    assert bounds["image"].tolist() == [image]
    assert bounds.loc[0, "upper"] == batch_bounds["upper"][(1, 3).index(image)]
    assert bounds.loc[0, "noise"] == batch_bounds["noise"][(1, 3).index(image)]


def test_a_and_b_map_figures_show_the_bounds_of_the_96px_image(stage_outputs):
    """The article titled every case's map figure with the bounds of the 96×96 image; case a's summary holds
    those of the image resized to 88×88. The figure's bounds are the 96×96 image's, not the summary's."""
    encoder_images, summary = np.load(stage_outputs["encoder_images"]), pd.read_csv(stage_outputs["summary"])
    bounds = pd.read_csv(stage_outputs["bounds3"]).set_index("image")
    image = encoder_images[3]
    assert bounds.loc[3, "upper"] == pytest.approx(float(mutual_information(image, image[None], 30)[0]), rel=1e-12)
    assert bounds.loc[3, "noise"] == pytest.approx(noise_bound(image, 3, 0, 30), rel=1e-12)
    sized = np.load(stage_outputs["sized_images"])[3]
    assert summary.loc[3, "upper"] == pytest.approx(float(mutual_information(sized, sized[None], 30)[0]))
    assert bounds.loc[3, "upper"] != summary.loc[3, "upper"] and bounds.loc[3, "noise"] != summary.loc[3, "noise"]
