"""Provenance records of a small real chain built with the stage CLIs: show, verify, drift."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mifeatures import aggregate, data, figures, grayscale, provenance, score, train
from mifeatures.params import load_params, merge

REPO = Path(__file__).resolve().parents[1]
CASES = ("a", "c")


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    """data → grayscale → train and score (cases a, c) → aggregate → figures, with the params used."""
    root = tmp_path_factory.mktemp("chain")
    params = merge(load_params([REPO / "params.yaml"]), {
        "cases": list(CASES), "data": {"sample": {"n_images": 8}}, "train": {"epochs": 1, "batch_size": 4}})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    raw = root / "data/sample/stl10_binary/train_X.bin"
    data.main(["sample", "--n-images", "8", "--seed", "78", "--out", str(raw)])
    gray = {size: root / f"size{size}.npy" for size in (96, 88)}
    grayscale.main([str(raw), "--sizes", "96", "88", "--outputs", str(gray[96]), str(gray[88]),
                    "--dataset-params", "data.dataset=sample", "data.sample.n_images=8", "data.sample.seed=78"])
    paths = {"params": root / "params.yaml", "raw": raw}
    for case, size in zip(CASES, (88, 96)):
        out = root / case
        train.main(["--case", case, "--encoder-images", str(gray[96]), "--critic-images", str(gray[size]),
                    "--epochs", "1", "--batch-size", "4", "--encoder-out", str(out / "encoder.pt"),
                    "--loss-out", str(out / "loss.csv")])
        score.main(["--encoder", str(out / "encoder.pt"), "--encoder-images", str(gray[96]),
                    "--sized-images", str(gray[size]), "--mi-out", str(out / "mi.csv"),
                    "--summary-out", str(out / "summary.csv")])
        figures.main(["maps", "--encoder", str(out / "encoder.pt"), "--encoder-images", str(gray[96]),
                      "--sized-images", str(gray[size]), "--mi", str(out / "mi.csv"),
                      "--summary", str(out / "summary.csv"), "--image", "2", "--out", str(root / f"maps_{case}.png")])
        paths[f"encoder_{case}"] = out / "encoder.pt"
        paths[f"maps_{case}"] = root / f"maps_{case}.png"
    summaries = [f"{case}={root / case / 'summary.csv'}" for case in CASES]
    aggregate.main(summaries + ["--cases-out", str(root / "cases.csv"), "--images-out", str(root / "images.csv"),
                                "--metrics-out", str(root / "metrics.json")])
    figures.main(["wins", "--cases", str(root / "cases.csv"), "--win-by", "mean", "--out", str(root / "wins.png")])
    paths["wins"] = root / "wins.png"
    return paths


def verify(chain, capsys, params=None) -> tuple[int, str]:
    """Run `mifeatures provenance --verify` on the three figures; return its exit code and output."""
    figure_args = [str(chain[name]) for name in ("maps_a", "maps_c", "wins")]
    with pytest.raises(SystemExit) as exit_:
        provenance.main(figure_args + ["--verify", "--params", str(params or chain["params"])])
    return exit_.value.code, capsys.readouterr().out


def status(output: str) -> dict[str, str]:
    """{figure file name: 'current' or 'DRIFTED'} from the --verify output."""
    return {Path(line.split(": ")[0]).name: line.split(": ")[1] for line in output.splitlines()
            if not line.startswith(" ")}


def test_record_reaches_back_to_the_dataset(chain):
    """A figure's record chains figure → score → train → grayscale → raw file, with hashes and params."""
    job = json.loads(provenance.sidecar(chain["wins"]).read_text())
    stages = [record["stage"] for record in provenance.chain(job)]
    assert stages[0] == "figures" and {"aggregate", "score", "train", "grayscale"} <= set(stages)
    grayscale_record = next(r for r in provenance.chain(job) if r["stage"] == "grayscale")
    assert grayscale_record["inputs"]["images"]["sha256"] == provenance.sha256(chain["raw"])
    assert grayscale_record["params"] == {"data.dataset": "sample", "data.sample.n_images": 8, "data.sample.seed": 78}
    train_record = next(r for r in provenance.chain(job) if r["stage"] == "train")
    assert train_record["params"]["train.lr"] == 1e-4 and train_record["context"]["case"] in CASES
    assert job["output"]["sha256"] == provenance.sha256(chain["wins"])
    assert {"git_commit", "git_dirty", "mifeatures"} <= job["code"].keys()
    assert {"python", "torch", "numpy", "snakemake", "dvc"} <= job["environment"].keys()


def test_show_prints_the_chain(chain, capsys):
    """`mifeatures provenance FIGURE` prints each job with its params down to the source data."""
    provenance.main([str(chain["maps_c"])])
    shown = capsys.readouterr().out
    for expected in ("made by figures [case c] [image 2]", "made by train [case c]", "train.lr=0.0001",
                     "made by score [case c]", "data.sample.seed=78", f"{chain['raw']}  sha256:", "(source data)"):
        assert expected in shown


def test_png_carries_the_essentials(chain):
    """The PNG's text chunks hold the code identity, the params and the hashes of the direct inputs."""
    with Image.open(chain["wins"]) as image:
        text = image.text
    assert json.loads(text["mifeatures:params"]) == {"aggregate.win_by": "mean"}
    inputs = json.loads(text["mifeatures:inputs"])
    assert list(inputs.values()) == [provenance.sha256(path) for path in inputs]
    assert "git_commit" in json.loads(text["mifeatures:code"])


def test_fresh_figures_verify_as_current(chain, capsys):
    """Right after the build every figure is current and the exit code is 0."""
    code, output = verify(chain, capsys)
    assert code == 0 and set(status(output).values()) == {"current"}


def test_changed_checkpoint_flags_exactly_the_figures_downstream(chain, capsys):
    """Altering case c's checkpoint drifts maps_c and wins (via the aggregate), not maps_a."""
    original = chain["encoder_c"].read_bytes()
    try:
        chain["encoder_c"].write_bytes(original + b"\0")
        code, output = verify(chain, capsys)
    finally:
        chain["encoder_c"].write_bytes(original)
    assert code == 1
    assert status(output) == {"maps_a.png": "current", "maps_c.png": "DRIFTED", "wins.png": "DRIFTED"}
    assert f"input {chain['encoder_c']}: content changed" in output


def test_changed_param_of_one_case_flags_exactly_its_figures(chain, capsys, tmp_path):
    """A learning-rate override for case c drifts maps_c and wins, naming the key and both values."""
    changed = tmp_path / "params.yaml"
    params = yaml.safe_load(chain["params"].read_text())
    changed.write_text(yaml.safe_dump(merge(params, {"train": {"overrides": {"c": {"lr": 2e-4}}}})))
    code, output = verify(chain, capsys, changed)
    assert code == 1
    assert status(output) == {"maps_a.png": "current", "maps_c.png": "DRIFTED", "wins.png": "DRIFTED"}
    assert "param train.lr (case c): 0.0001 when made, 0.0002 now" in output


def test_missing_record_and_missing_input_are_drift(chain, capsys, tmp_path):
    """A figure without a record, or whose input is gone, is reported as drifted."""
    lone = tmp_path / "lone.png"
    shutil.copy(chain["wins"], lone)
    assert provenance.drift(lone, {}) == [f"{lone}: no provenance record ({lone}.prov.json)"]
    cases_csv = chain["wins"].with_name("cases.csv")
    moved = tmp_path / "cases.csv"
    shutil.move(cases_csv, moved)
    try:
        problems = provenance.drift(chain["wins"], yaml.safe_load(chain["params"].read_text()))
    finally:
        shutil.move(moved, cases_csv)
    assert f"input {cases_csv}: missing" in problems


def test_show_without_a_record_is_a_usage_error(tmp_path):
    """Asking for a file the workflow did not make exits with a message, not a traceback."""
    with pytest.raises(SystemExit) as exit_:
        provenance.main([str(tmp_path / "nothing.png")])
    assert exit_.value.code == 2
