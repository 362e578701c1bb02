"""Provenance records of a small real chain built with the stage CLIs: show, verify, and drift found by
tampering with a table, a checkpoint, a module and the params."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mifeatures.stages import aggregate, figures, grayscale, maps, sample, score, train

from mifeatures.workflow import audit, provenance, sources
from mifeatures.core.protocols import PROTOCOLS
from mifeatures.workflow.params import load_params, merge, validate_params

REPO = Path(__file__).resolve().parents[1]
CASES = ("a", "c")


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    """data → grayscale → train and score (cases a, c) → aggregate → figures, with the params used."""
    root = tmp_path_factory.mktemp("chain")
    params = merge(load_params([REPO / "params.yaml"]), {
        "cases": list(CASES), "data": {"sample": {"n_images": 8}}, "train": {"epochs": 1, "batch_size": 4},
        "figures": {"images": [2]}})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    # As the workflow does: every job records the config files it was run with.
    os.environ[provenance.CONFIG_FILES_VARIABLE] = str(root / "params.yaml")
    raw = root / "data/sample/stl10_binary/train_X.bin"
    sample.main(["--n-images", "8", "--seed", "78", "--out", str(raw)])
    gray = {size: root / f"size{size}.npy" for size in (96, 88)}
    for size, out in gray.items():
        grayscale.main([str(raw), "--size", str(size), "--out", str(out)])
    paths = {"params": root / "params.yaml", "raw": raw}
    for case, size in zip(CASES, (88, 96)):
        out = root / case
        train.main(["--case", case, "--encoder-images", str(gray[96]), "--critic-images", str(gray[size]),
                    "--epochs", "1", "--batch-size", "4", "--lr", "0.0001", "--seed", "78", "--alpha", "0.1",
                    "--beta", "0.1", "--gamma", "0.8", "--critic-channels", "64", "--global-units", "256",
                    "--device", "cpu", "--precision", "fp32", "--no-fused-adam",
                    "--no-together", "--no-cuda-graph", "--checkpoint-every", "5",
                    "--encoder-out", str(out / "encoder.pt"),
                    "--loss-out", str(out / "loss.csv")])
        score.main(["--protocol", "faithful", "--bins", "30", "--noise-seed", "0", "--device", "cpu",
                    "--encoder", str(out / "encoder.pt"), "--encoder-images", str(gray[96]),
                    "--sized-images", str(gray[size]), "--mi-out", str(out / "mi.csv"),
                    "--summary-out", str(out / "summary.csv")])
        maps.main(["--protocol", "faithful", "--bins", "30", "--noise-seed", "0", "--device", "cpu",
                   "--encoder", str(out / "encoder.pt"), "--encoder-images", str(gray[96]),
                   "--sized-images", str(gray[size]), "--image", "2", "--maps-out", str(out / "image2.npy"),
                   "--bounds-out", str(out / "image2_bounds.csv")])
        figures.main(["maps", "--maps", str(out / "image2.npy"), "--bounds", str(out / "image2_bounds.csv"),
                      "--encoder-images", str(gray[96]), "--mi", str(out / "mi.csv"), "--image", "2",
                      "--case", case, "--dataset", "sample", "--order", "index",
                      "--out", str(root / f"maps_{case}.png")])
        paths[f"encoder_{case}"] = out / "encoder.pt"
        paths[f"maps_{case}"] = root / f"maps_{case}.png"
    summaries = [f"{case}={root / case / 'summary.csv'}" for case in CASES]
    aggregate.main(summaries + ["--cases-out", str(root / "cases.csv"), "--images-out", str(root / "images.csv"),
                                "--metrics-out", str(root / "metrics.json")])
    figures.main(["wins", "--cases", str(root / "cases.csv"), "--win-by", "mean", "--out", str(root / "wins.png")])
    del os.environ[provenance.CONFIG_FILES_VARIABLE]
    paths["wins"] = root / "wins.png"
    paths["summary_a"] = root / "a/summary.csv"
    return paths


def verify(chain, capsys, params=None) -> tuple[int, str]:
    """The record checks of `mifeatures provenance --verify` (bytes, code, params through the chain) on the
    three figures, against the config files that made them or ``params``: (figures drifted, report). The
    comparison with the workflow's own plan needs a checkout and is tested in test_audit."""
    lines, drifted = [], 0
    for name in ("maps_a", "maps_c", "wins"):
        figure = chain[name]
        record = json.loads(provenance.sidecar(figure).read_text())
        values = load_params([params] if params else audit.config_files(record))
        validate_params(values, REPO / "workflow/schemas/params.schema.yaml")
        problems = audit.drift(figure, values)
        drifted += bool(problems)
        lines += [f"{figure}: " + ("DRIFTED" if problems else "current"), *(f"  - {p}" for p in problems)]
    return drifted, "\n".join(lines)


def status(output: str) -> dict[str, str]:
    """{figure file name: 'current' or 'DRIFTED'} from the report."""
    return {Path(line.split(": ")[0]).name: line.split(": ")[1] for line in output.splitlines()
            if not line.startswith(" ")}


def test_record_reaches_back_to_the_dataset(chain):
    """A figure's record chains figure → score → train → grayscale → raw file, with hashes and params."""
    job = json.loads(provenance.sidecar(chain["wins"]).read_text())
    stages = [record["stage"] for record in audit.chain(job)]
    assert stages[0] == "figures" and {"aggregate", "score", "train", "grayscale", "sample"} <= set(stages)
    grayscale_record = next(r for r in audit.chain(job) if r["stage"] == "grayscale")
    assert grayscale_record["inputs"]["images"]["sha256"] == provenance.sha256(chain["raw"])
    data_record = next(r for r in audit.chain(job) if r["stage"] == "sample")
    assert data_record["params"] == {"data.sample.n_images": 8, "data.sample.seed": 78}
    assert data_record["output"] == {"path": str(chain["raw"]), "sha256": provenance.sha256(chain["raw"])}
    train_record = next(r for r in audit.chain(job) if r["stage"] == "train")
    assert train_record["params"]["train.lr"] == 1e-4 and train_record["context"]["case"] in CASES
    assert job["output"]["sha256"] == provenance.sha256(chain["wins"])
    assert {"git_commit", "git_dirty", "mifeatures", "modules"} <= job["code"].keys()
    assert {"python", "torch", "numpy", "snakemake", "dvc"} <= job["environment"].keys()
    assert job["config_files"] == [str(chain["params"])]


def test_record_names_the_code_each_stage_ran(chain):
    """Each record lists a digest of every module its stage imports (a score job's: with its protocol's
    scorer), and only those."""
    job = json.loads(provenance.sidecar(chain["wins"]).read_text())
    for record in audit.chain(job):
        scorer = (PROTOCOLS[record["context"]["protocol"]].scorer,) if record["stage"] == "score" else ()
        assert record["code"]["modules"] == sources.digests(f"stages.{record['stage']}", *scorer)
    aggregate_modules = next(r for r in audit.chain(job) if r["stage"] == "aggregate")["code"]["modules"]
    assert "mifeatures/stages/aggregate.py" in aggregate_modules
    assert "mifeatures/stages/train.py" not in aggregate_modules


@pytest.mark.parametrize("stage", ["train", "score", "crosscheck", "findings"])
def test_protocol_stages_depend_on_the_protocol_names_not_on_params_validation(stage):
    """The stages of the protocol wildcard take its names from a module of their own, so an edit of the
    schema checks in params.py reruns no training or scoring."""
    ran = sources.modules(f"stages.{stage}")
    assert "core.protocols" in ran and "workflow.params" not in ran


def test_record_names_the_device_precision_and_torch_build(chain):
    """Jobs that run torch say on which device and with which float settings; the torch build is named. The
    maps figure draws the maps its maps job wrote, and names no device: it ran no network."""
    assert json.loads(provenance.sidecar(chain["maps_c"]).read_text())["environment"]["device"] is None
    record = json.loads(provenance.sidecar(chain["summary_a"]).read_text())
    environment = record["environment"]
    assert environment["device"] == "cpu"
    assert environment["tf32_matmul"] is False and environment["float32_matmul_precision"] == "highest"
    # One of the build's version and the package metadata's may carry the variant ("+cpu", "+cu130").
    release = {version.partition("+")[0] for version in (environment["torch_build"]["version"], environment["torch"])}
    assert len(release) == 1
    assert "cuda" in environment["torch_build"]
    encoder_record = json.loads(provenance.sidecar(chain["encoder_c"]).read_text())
    assert encoder_record["environment"]["device"] == "cpu"


def test_command_through_the_entry_point_is_recorded_as_run(chain, tmp_path):
    """`mifeatures aggregate …` is recorded as that command, not as a made-up `python -m` line."""
    out = {name: tmp_path / name for name in ("cases.csv", "images.csv", "metrics.json")}
    command = [str(Path(sys.executable).parent / "mifeatures"), "aggregate", f"a={chain['summary_a']}",
               "--cases-out", str(out["cases.csv"]), "--images-out", str(out["images.csv"]),
               "--metrics-out", str(out["metrics.json"])]
    subprocess.run(command, check=True, capture_output=True)
    recorded = json.loads(provenance.sidecar(out["cases.csv"]).read_text())["command"]
    assert recorded.endswith(" ".join(command[1:]) + "") and "bin/mifeatures aggregate a=" in recorded
    assert "aggregate aggregate" not in recorded


def test_git_state_is_about_the_package_sources_only(tmp_path):
    """Editing a file beside the package (params.yaml) is not a code change; a new untracked module is."""
    package = tmp_path / "src/mifeatures"
    package.mkdir(parents=True)
    (package / "train.py").write_text("x = 1\n")
    (tmp_path / "params.yaml").write_text("lr: 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(git + command, cwd=tmp_path, check=True)
    assert provenance.git_state(package)[1] is False
    (tmp_path / "params.yaml").write_text("lr: 2\n")
    assert provenance.git_state(package)[1] is False
    (package / "extra.py").write_text("y = 2\n")
    assert provenance.git_state(package)[1] is True


def test_show_prints_the_chain(chain, capsys):
    """`mifeatures provenance FIGURE` prints each job with its params down to the source data."""
    audit.main([str(chain["maps_c"])])
    shown = capsys.readouterr().out
    for expected in ("made by figures [case c] [image 2] at",
                     "made by train [case c] [protocol faithful] [seed 78] on cpu", "train.lr=0.0001",
                     "made by score [case c]", "data.sample.seed=78", f"{chain['raw']}  sha256:", "made by sample"):
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
    """Right after the build every figure is current against the config that made it, exit code 0."""
    code, output = verify(chain, capsys)
    assert code == 0 and set(status(output).values()) == {"current"}, output


def test_verify_uses_the_config_files_that_made_the_figure(chain, capsys, tmp_path):
    """The chain was built with 8 images and 1 epoch: against the repository's params.yaml alone it has
    drifted, against its own config (the default) it has not."""
    assert verify(chain, capsys)[0] == 0
    code, output = verify(chain, capsys, REPO / "params.yaml")
    assert code == 3 and "param data.sample.n_images: 8 when made, 200 now" in output


def test_hand_edited_table_is_caught_even_after_a_rebuilt_figure(chain, capsys, tmp_path):
    """A summary table edited by hand, then a figure drawn from it: the figure's record holds the edited
    bytes, but the table's own record holds what the score stage wrote, and --verify compares them."""
    table = chain["summary_a"]
    original = table.read_bytes()
    figure = tmp_path / "distribution.png"
    try:
        table.write_text(original.decode().replace("\n2,", "\n2,9", 1))
        figures.main(["distribution", f"a={table}", "--out", str(figure)])
        problems = audit.drift(figure, load_params([chain["params"]]))
    finally:
        table.write_bytes(original)
    assert any(p.startswith(f"input {table}: its bytes when figures read them differ from those score wrote")
               for p in problems), problems


def test_table_copied_with_its_record_to_another_case_is_caught_downstream(chain, tmp_path):
    """Case a's summary copied with its record to another place, then aggregated from there: the aggregate's
    record embeds a record written for a's path, which --verify names (the copy itself is named by its own
    record's path)."""
    copied = tmp_path / "c/summary.csv"
    copied.parent.mkdir()
    for suffix in ("", provenance.SUFFIX):
        shutil.copy(f"{chain['summary_a']}{suffix}", f"{copied}{suffix}")
    out = tmp_path / "cases.csv"
    aggregate.main([f"a={chain['summary_a']}", f"c={copied}", "--cases-out", str(out), "--images-out",
                    str(tmp_path / "images.csv"), "--metrics-out", str(tmp_path / "metrics.json")])
    problems = audit.drift(out, load_params([chain["params"]]))
    assert f"input {copied}: the record aggregate embedded for it was written for {chain['summary_a']}" in problems
    assert f"{copied}: its record was written for {chain['summary_a']} (copied from there?)" in audit.drift(
        copied, load_params([chain["params"]]))


def test_edited_module_is_code_drift(chain, tmp_path):
    """A figure made by older code is not current: editing aggregate.py (which decides the wins) drifts
    wins.png, whose aggregate and figures jobs ran it, and not maps_a.png; a comment alone changes nothing."""
    package = tmp_path / "mifeatures"
    shutil.copytree(sources.ROOT, package, ignore=shutil.ignore_patterns("__pycache__"))
    params = load_params([chain["params"]])
    module = package / "core/statistics/aggregation.py"
    module.write_text(module.read_text() + "\n# a comment changes no behaviour\n")
    assert audit.drift(chain["wins"], params, package) == []
    module.write_text(module.read_text().replace('WIN_STATISTICS = ("mean", "max")', 'WIN_STATISTICS = ("max",)'))
    assert audit.drift(chain["wins"], params, package) == [
        f"code mifeatures/core/statistics/aggregation.py: changed since {stage} ran it"
        for stage in ("aggregate", "figures")]
    assert "changed since score ran it" not in " ".join(audit.drift(chain["maps_a"], params, package))


def test_changed_checkpoint_flags_exactly_the_figures_downstream(chain, capsys):
    """Altering case c's checkpoint drifts maps_c and wins (via the aggregate), not maps_a."""
    original = chain["encoder_c"].read_bytes()
    try:
        chain["encoder_c"].write_bytes(original + b"\0")
        code, output = verify(chain, capsys)
    finally:
        chain["encoder_c"].write_bytes(original)
    assert code == 2
    assert status(output) == {"maps_a.png": "current", "maps_c.png": "DRIFTED", "wins.png": "DRIFTED"}
    assert f"input {chain['encoder_c']}: its bytes are not those its record gives" in output


def test_changed_param_of_one_case_flags_exactly_its_figures(chain, capsys, tmp_path):
    """A learning-rate override for case c drifts maps_c and wins, naming the key and both values."""
    changed = tmp_path / "params.yaml"
    params = yaml.safe_load(chain["params"].read_text())
    changed.write_text(yaml.safe_dump(merge(params, {"train": {"overrides": {"c": {"lr": 2e-4}}}})))
    code, output = verify(chain, capsys, changed)
    assert code == 2
    assert status(output) == {"maps_a.png": "current", "maps_c.png": "DRIFTED", "wins.png": "DRIFTED"}
    assert "param train.lr (case c): 0.0001 when made, 0.0002 now" in output
    changed.write_text(changed.read_text().replace("lr: 0.0002", "lr: 1e-04"))  # as DVC writes floats
    assert verify(chain, capsys, changed)[0] == 0


def test_seed_dropped_from_train_seeds_is_drift(chain, capsys, tmp_path):
    """A figure made from a run whose seed is no longer in train.seeds no longer matches the params."""
    changed = tmp_path / "params.yaml"
    changed.write_text(yaml.safe_dump(merge(yaml.safe_load(chain["params"].read_text()), {"train": {"seeds": [79]}})))
    code, output = verify(chain, capsys, changed)
    assert code == 3 and set(status(output).values()) == {"DRIFTED"}
    assert "seed 78 (case c): trained with it, not in train.seeds [79] now" in output


def test_missing_record_and_missing_input_are_drift(chain, capsys, tmp_path):
    """A figure without a record, or whose input is gone, is reported as drifted."""
    lone = tmp_path / "lone.png"
    shutil.copy(chain["wins"], lone)
    assert audit.drift(lone, {}) == [f"{lone}: no provenance record ({lone}.prov.json)"]
    cases_csv = chain["wins"].with_name("cases.csv")
    moved = tmp_path / "cases.csv"
    shutil.move(cases_csv, moved)
    try:
        problems = audit.drift(chain["wins"], yaml.safe_load(chain["params"].read_text()))
    finally:
        shutil.move(moved, cases_csv)
    assert f"input {cases_csv}: missing" in problems


def test_score_takes_the_case_from_the_checkpoint_not_from_its_job(chain, tmp_path, capsys):
    """Case a's checkpoint at case c's place was scored as case a, and its tables written as c's. A job names
    the run it scores (--run CASE PROTOCOL SEED), and another run's checkpoint is refused before any output."""
    root = chain["params"].parent
    out = tmp_path / "c"
    with pytest.raises(SystemExit) as exit_:
        score.main(["--protocol", "faithful", "--bins", "30", "--noise-seed", "0", "--device", "cpu",
                    "--encoder", str(chain["encoder_a"]), "--run", "c", "faithful", "78",
                    "--encoder-images", str(root / "size96.npy"), "--sized-images", str(root / "size96.npy"),
                    "--mi-out", str(out / "mi.csv"), "--summary-out", str(out / "summary.csv")])
    assert exit_.value.code == 2
    assert ("a checkpoint of case a (adversarial prior False, seed 78), not of case c (adversarial prior False, "
            "seed 78)") in capsys.readouterr().err
    assert not out.exists()


def test_show_without_a_record_is_a_usage_error(tmp_path):
    """Asking for a file the workflow did not make exits with a message, not a traceback."""
    with pytest.raises(SystemExit) as exit_:
        audit.main([str(tmp_path / "nothing.png")])
    assert exit_.value.code == 2


def test_a_stage_run_from_src_without_installing_writes_its_record(tmp_path):
    """On a machine where the project is only on PYTHONPATH (a bare GPU machine), `importlib.metadata` knows no
    mifeatures: the job still writes its output and its record, which says so, instead of failing at its end."""
    script = """
import importlib.metadata as metadata, runpy, sys
real = metadata.version
def version(name):
    if name == "mifeatures":
        raise metadata.PackageNotFoundError(name)
    return real(name)
metadata.version = version
sys.argv = ["sample", "--n-images", "2", "--seed", "0", "--out", sys.argv[1]]
runpy.run_module("mifeatures.stages.sample", run_name="__main__")
"""
    out = tmp_path / "train_X.bin"
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, capture_output=True)
    record = json.loads(provenance.sidecar(out).read_text())
    assert out.stat().st_size == 2 * 3 * 96 * 96 and record["code"]["mifeatures"] == "not installed"
