"""Your own images as the dataset (data.dataset: folder): which files, in which order, made into 96×96 images
how, refused when they cannot be, and recorded with each file's hash; the folder itself untouched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from builds import BIN, COPIED, drifted, planned, run, snakemake, verify_all

from mifeatures.core.data.folder import FolderError, image_files
from mifeatures.core.data.own_images import load_folder, load_image
from mifeatures.core.data.stl10 import read_stl10_images
from mifeatures.stages.folder import main as folder_main
from mifeatures.workflow.params import ParamsError, load_params, merge, validate_params

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/params.schema.yaml"
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def save(path: Path, size: tuple[int, int], color=BLUE, mode: str = "RGB", **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **options)
    return path


def photos(folder: Path, n: int = 12, seed: int = 0) -> list[Path]:
    """``n`` noise images of mixed sizes, PNG and JPEG, some in a subfolder."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(n):
        width, height = int(rng.integers(96, 300)), int(rng.integers(96, 300))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        name = f"{'set2/' if index % 3 == 0 else ''}photo{index:02d}.{'jpg' if index % 2 else 'png'}"
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(path): (path.read_bytes(), path.stat().st_mtime_ns) for path in sorted(folder.rglob("*"))
            if path.is_file()}


def test_files_are_ordered_by_their_path_in_the_folder_hidden_ones_left_out(tmp_path):
    for name in ("b.png", "a/z.JPG", "a/b.jpeg", "B.png", ".hidden.png", ".cache/x.png", "c.png"):
        save(tmp_path / name, (96, 96))
    assert [path.relative_to(tmp_path).as_posix() for path in image_files(tmp_path)] == [
        "B.png", "a/b.jpeg", "a/z.JPG", "b.png", "c.png"]


@pytest.mark.parametrize("name, said", [
    ("notes.txt", "notes.txt: not an image this dataset takes (allowed: .png, .jpg, .jpeg files"),
    ("scan.tiff", "scan.tiff: not an image this dataset takes"),
])
def test_another_file_in_the_folder_is_refused_by_name(tmp_path, name, said):
    save(tmp_path / "ok.png", (96, 96))
    (tmp_path / name).write_text("x")
    with pytest.raises(FolderError, match=said.replace("(", r"\(").replace(".", r"\.")):
        image_files(tmp_path)


def test_an_empty_or_missing_folder_is_refused(tmp_path):
    with pytest.raises(FolderError, match="holds no .png, .jpg, .jpeg file"):
        image_files(tmp_path)
    with pytest.raises(FolderError, match="no such folder"):
        image_files(tmp_path / "missing")


def test_a_small_or_unreadable_image_is_refused_by_name(tmp_path):
    small = save(tmp_path / "small.png", (200, 95))
    with pytest.raises(FolderError, match=r"small\.png: 200×95 pixels; each image needs at least 96"):
        load_image(small)
    fake = tmp_path / "fake.png"
    fake.write_text("not a PNG")
    with pytest.raises(FolderError, match=r"fake\.png: cannot be read as an image"):
        load_image(fake)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(save(tmp_path / "whole.png", (300, 300)).read_bytes()[:60])
    with pytest.raises(FolderError, match=r"truncated\.png: cannot be read as an image"):
        load_image(truncated)


def test_an_image_is_cut_to_its_central_square_then_reduced(tmp_path):
    """A 300×100 image, red | blue | green thirds, keeps only its blue centre; a 100×300 one likewise."""
    wide = Image.new("RGB", (300, 100), RED)
    wide.paste(Image.new("RGB", (100, 100), BLUE), (100, 0))
    wide.paste(Image.new("RGB", (100, 100), GREEN), (200, 0))
    wide.save(tmp_path / "wide.png")
    wide.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "tall.png")
    for name in ("wide.png", "tall.png"):
        image = load_image(tmp_path / name)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert (image == BLUE).all(), name


def test_modes_become_rgb_and_exif_orientation_is_applied(tmp_path):
    gray = load_image(save(tmp_path / "gray.png", (120, 120), 77, mode="L"))
    assert (gray == 77).all()
    rgba = load_image(save(tmp_path / "rgba.png", (120, 120), (10, 20, 30, 0), mode="RGBA"))
    assert (rgba == (10, 20, 30)).all()
    # Stored 200 wide, 100 high with the left half red; EXIF orientation 6 says: turn it a quarter clockwise to
    # view, so it stands 100 wide, 200 high, red on top, and its central square is half red over half blue.
    stored = Image.new("RGB", (200, 100), BLUE)
    stored.paste(Image.new("RGB", (100, 100), RED), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=100, subsampling=0)
    upright = load_image(tmp_path / "phone.jpg").astype(int)
    assert upright.shape == (96, 96, 3)
    assert np.abs(upright[:40, :, :] - RED).max() < 16 and np.abs(upright[-40:, :, :] - BLUE).max() < 16


def test_the_stage_writes_every_image_records_each_file_and_touches_no_file_of_the_folder(tmp_path):
    folder = tmp_path / "photos"
    paths = photos(folder)
    before = snapshot(folder)
    out = tmp_path / "data/folder/stl10_binary/train_X.bin"
    folder_main([str(folder), "--out", str(out)])
    assert snapshot(folder) == before
    images = read_stl10_images(out)
    assert images.shape == (len(paths), 96, 96, 3)
    ordered = image_files(folder)
    np.testing.assert_array_equal(images, load_folder(ordered))
    record = json.loads(Path(f"{out}.prov.json").read_text())
    assert record["params"] == {"data.folder.path": str(folder)}
    assert [entry["path"] for entry in record["inputs"].values()] == [str(path) for path in ordered]
    assert all(entry["sha256"] == hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest()
               for entry in record["inputs"].values())


def test_the_stage_names_the_key_and_the_file_it_cannot_use(tmp_path, capsys):
    folder = tmp_path / "photos"
    photos(folder, n=3)
    save(folder / "tiny.png", (64, 64))
    out = tmp_path / "train_X.bin"
    with pytest.raises(SystemExit, match=r"data\.folder\.path: .*tiny\.png: 64×64 pixels"):
        folder_main([str(folder), "--out", str(out)])
    assert not out.exists() and os.listdir(tmp_path) == ["photos"]


def folder_params(path, **changes) -> dict:
    return merge(load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"]),
                 {"data": {"dataset": "folder", "folder": {"path": path}}, **changes})


@pytest.mark.parametrize("setup, said", [
    (lambda root: None, "data.folder.path: not set; data.dataset: folder needs the folder"),
    (lambda root: str(root / "missing"), "data.folder.path: .*missing: no such folder"),
    (lambda root: photos(root / "p", n=12) and str(root / "p"), "figures.images: image 12 does not exist: the "
                                                               "folder .* has 12 images"),
])
def test_the_validator_refuses_a_folder_it_cannot_use_naming_the_key(tmp_path, setup, said):
    params = folder_params(setup(tmp_path), figures={"images": [10, 12]})
    with pytest.raises(ParamsError, match=said):
        validate_params(params, SCHEMA)


def test_the_validator_accepts_a_folder_of_images(tmp_path):
    folder = tmp_path / "p"
    photos(folder, n=12)
    validate_params(folder_params(str(folder)), SCHEMA)


@pytest.mark.slow
def test_a_folder_of_mixed_images_builds_every_figure_with_each_file_in_the_records(tmp_path):
    """config/examples/own-images.yaml over the tiny config, cases a and c (the fewest the figures compare), on 20
    PNG and JPEG files of mixed sizes in photos/: every figure builds, the audit calls every output current, the
    data record holds each file's hash and every figure's chain reaches it; the folder is untouched; an edited
    image reruns the folder job; a too-small image added is refused before any job, named."""
    root = tmp_path / "project"
    root.mkdir()
    for name in COPIED:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, root / name)
    params = merge(load_params([REPO / "params.yaml", REPO / "config/tiny.yaml",
                                REPO / "config/examples/own-images.yaml"]), {"cases": ["a", "c"]})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    files = photos(root / "photos", n=20)
    before = snapshot(root / "photos")
    snakemake(root, "all")
    assert snapshot(root / "photos") == before
    figures = sorted((root / "results/figures").glob("*.png"))
    assert {path.name for path in figures} == {"loss.png", "chosen_mean_mi.png", "mi_distribution.png", "wins.png",
                                               *(f"maps_{case}_image{image}.png" for case in "ac" for image in (0, 1))}
    code, verdicts = verify_all(root)
    assert code == 0 and not drifted(verdicts), verdicts
    record = json.loads((root / "data/folder/stl10_binary/train_X.bin.prov.json").read_text())
    assert record["params"] == {"data.folder.path": "photos"}
    assert {entry["path"]: entry["sha256"] for entry in record["inputs"].values()} == {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}
    said = run(root, str(BIN / "mifeatures"), "provenance", "results/figures/maps_a_image0.png").stdout
    assert "made by folder" in said and "photos/set2/photo00.png" in said, said

    Image.fromarray(np.zeros((120, 150, 3), np.uint8)).save(files[5])
    assert planned(root)["folder"] == 1
    save(root / "photos/small.png", (64, 64))
    refused = snakemake(root, "-n", "all", check=False)
    assert refused.returncode != 0
    assert "data.folder.path: photos/small.png: 64×64 pixels" in refused.stdout + refused.stderr
