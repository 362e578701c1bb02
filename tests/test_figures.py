"""Tests of the figures stage: every CLI figure becomes a valid PNG from real stage outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mifeatures.aggregation import per_case, per_image
from mifeatures.figures import image_bounds, main, maps_figure
from mifeatures.mi import mutual_information
from mifeatures.models import build_encoder
from mifeatures.maps import load_encoder
from mifeatures.scoring import score


@pytest.fixture(scope="module")
def stage_outputs(tmp_path_factory, trained_case):
    """Score and aggregate tables of the trained case a, reused as two cases for the combined charts."""
    folder = tmp_path_factory.mktemp("figures")
    _, encoder = load_encoder(trained_case["encoder"])
    table, summary = score(encoder, np.load(trained_case["encoder_images"]),
                           np.load(trained_case["sized_images"]), bins=30, noise_seed=0)
    paths = dict(trained_case, mi=folder / "mi.csv", summary=folder / "summary.csv", cases=folder / "cases.csv")
    table.to_csv(paths["mi"], index=False)
    summary.to_csv(paths["summary"], index=False)
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
        "loss": ["loss", f"a={s['loss']}", f"c={s['loss']}"],
        "maps": ["maps", "--encoder", str(s["encoder"]), "--encoder-images", str(s["encoder_images"]),
                 "--mi", str(s["mi"]), "--image", "3", "--bins", "30", "--noise-seed", "0"],
        "chosen": ["chosen", *pairs, "--images", "1", "3"],
        "distribution": ["distribution", *pairs],
        "wins": ["wins", "--cases", str(s["cases"]), "--win-by", "mean"],
    }
    for name, args in commands.items():
        main(args + ["--out", str(tmp_path / f"{name}.png")])
        assert_png(tmp_path / f"{name}.png")
    with Image.open(tmp_path / "maps.png") as image:
        assert image.size == (1600, 650)


def test_maps_figure_titles_each_map_with_its_mi(stage_outputs):
    """The grid has the image plus 32 maps, titled with the MI to 2 decimals, and the average in the title."""
    table = pd.read_csv(stage_outputs["mi"])
    mi = table.loc[table["image"] == 0, "mi"].to_numpy()
    maps = np.random.default_rng(0).random((32, 88, 88))
    figure = maps_figure(np.zeros((88, 88)), maps, mi, upper=2.0, noise=0.05, case="a", image_index=0)
    titles = [axis.get_title() for axis in figure.axes[1:]]
    assert titles == [f"{value:.2f}" for value in mi]
    assert f"Average MI: {mi.mean():.3f}" in figure._suptitle.get_text()
    assert "2.00" in figure.axes[0].get_title() and "0.05" in figure.axes[0].get_title()


def test_maps_cli_refuses_an_image_outside_the_dataset(tmp_path, stage_outputs):
    """figures.images beyond the dataset is a usage error, and no PNG is written."""
    s = stage_outputs
    with pytest.raises(SystemExit):
        main(["maps", "--encoder", str(s["encoder"]), "--encoder-images", str(s["encoder_images"]),
              "--mi", str(s["mi"]), "--image", "99", "--bins", "30", "--noise-seed", "0",
              "--out", str(tmp_path / "maps.png")])
    assert not (tmp_path / "maps.png").exists()


def test_a_and_b_map_figures_show_the_bounds_of_the_resized_image(stage_outputs):
    """The article titled every case's map figure with the bounds of the 96×96 image; case a's summary holds
    those of the image resized to 88×88. The figure's bounds are the 96×96 image's: for c and d they are
    the summary's (the same image), for a they differ from it."""
    encoder_images, summary = np.load(stage_outputs["encoder_images"]), pd.read_csv(stage_outputs["summary"])
    upper, noise = image_bounds(encoder_images[3], 3, 30, 0)
    sized = np.load(stage_outputs["sized_images"])[3]
    assert upper == pytest.approx(float(mutual_information(encoder_images[3], encoder_images[3][None], 30)[0]))
    assert summary.loc[3, "upper"] == pytest.approx(float(mutual_information(sized, sized[None], 30)[0]))
    assert upper != summary.loc[3, "upper"] and noise != summary.loc[3, "noise"]
    _, c_summary = score(build_encoder("c"), encoder_images, encoder_images, 30, 0)
    assert image_bounds(encoder_images[3], 3, 30, 0) == (c_summary.loc[3, "upper"], c_summary.loc[3, "noise"])
