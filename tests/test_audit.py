"""Every "current" the audit says and every "valid" the validator says is true: each finding of the review
(a value that validates, then deletes models or fails a job; outputs that verify current though other
arguments, other inputs or another checkout made them), on a copy of one tiny build."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from PIL import Image


from builds import (
    BIN, ENV, TIMEOUT, DVC, ARTICLE_RUN, run, snakemake, outputs, set_params, init_dvc, planned, edit, copy_of,
    verify_all, drifted, reruns
)

pytestmark = pytest.mark.slow

def test_fresh_build_verifies_current_and_every_declared_output_is_checked(built):
    """Right after a build every output under data/ and results/ that `all` declares is checked and current."""
    code, verdicts = verify_all(built)
    assert code == 0 and drifted(verdicts) == set()
    declared = {line.split("\t")[0] for line in run(built, str(BIN / "snakemake"), "--summary", "all").stdout
                .splitlines()[1:] if line.strip() and not line.split("\t")[0].endswith(".prov.json")}
    assert set(verdicts) == declared and "results/aggregate/metrics.json" in declared
    shown = sorted((built / "results/logs/progress").rglob("*.txt"))  # each training job's progress file
    assert len(shown) == 4 and all(": 100%" in path.read_text() for path in shown)


@pytest.mark.parametrize("override", [{"train": {"epochs": 1.0}}, {"train": {"batch_size": 30}},
                                      {"train": {"seeds": [78.0]}}, {"score": {"bins": 100000}}])
def test_value_the_validator_calls_valid_deletes_trained_models(built, tmp_path, override):
    """`epochs: 1.0`, `batch_size: 30` on 20 images (under --keep-going), `seeds: [78.0]` and `bins: 100000`
    were "valid" and failed a job after Snakemake had deleted its outputs: now refused before any job, by
    `mifeatures params` and Snakemake alike, and nothing is touched."""
    root = copy_of(built, tmp_path)
    before = outputs(root)
    (root / "bad.yaml").write_text(yaml.safe_dump(override))
    said = snakemake(root, "all", "--keep-going", "--configfile", "bad.yaml", check=False)
    checked = run(root, str(BIN / "mifeatures"), "params", "params.yaml", "bad.yaml", check=False)
    assert said.returncode != 0 and checked.returncode == 1
    key = ".".join([*override, *override[next(iter(override))]])
    assert key in said.stdout + said.stderr and key in checked.stderr, said.stdout + said.stderr
    assert outputs(root) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so device: cuda is valid here")
def test_device_cuda_on_a_machine_without_one_deletes_the_models(built, tmp_path):
    """`device: cuda` where there is no CUDA failed every train job after its outputs were removed: now the
    run stops before any job, naming the key and the cases."""
    root = copy_of(built, tmp_path)
    before = outputs(root)
    set_params(root, {"train": {"overrides": {"c": {"device": "cuda"}}}})
    said = snakemake(root, "all", check=False)
    assert said.returncode != 0
    assert "train.device: 'cuda' for case(s) c, but this machine has no CUDA device" in said.stdout + said.stderr
    assert outputs(root) == before


@pytest.mark.parametrize(("text", "message"), [
    ("train:\n  epochs: 1\n  epochs: 2\n", "line 3: key 'epochs' given twice"),
    ("data:\n  sample:\n    seed: 010\n", "line 3: seed: '010' has a leading zero"),
])
def test_duplicate_key_and_yaml_1_1_octal_seed_run_with_another_value(built, tmp_path, text, message):
    """A duplicate `epochs:` (Snakemake took the last, DVC refused the file) and `seed: 010` (8 to Snakemake,
    10 to DVC) stop Snakemake before any job, as DVC would."""
    root = copy_of(built, tmp_path)
    (root / "over.yaml").write_text(text)
    said = snakemake(root, "-n", "all", "--configfile", "over.yaml", check=False)
    assert said.returncode != 0 and message in said.stdout + said.stderr, said.stdout + said.stderr


def hand_train(root: Path, case: str, *changes: str) -> None:
    """Run the train stage by hand as the review did, writing into the article run's folder for ``case``."""
    folder = f"results/train/{ARTICLE_RUN}/{case}"
    run(root, sys.executable, "-m", "mifeatures.stages.train", "--case", case, "--encoder-images",
        "results/grayscale/size96.npy", "--critic-images", "results/grayscale/size88.npy", "--epochs", "1",
        "--batch-size", "10", "--lr", "0.0001", "--seed", "78", "--alpha", "0.1", "--beta", "0.1", "--gamma", "0.8",
        "--critic-channels", "64", "--global-units", "256", "--device", "cpu", "--precision", "fp32",
        "--no-fused-adam", "--no-together", "--no-cuda-graph", "--checkpoint-every", "5",
        "--encoder-out", f"{folder}/encoder.pt", "--loss-out", f"{folder}/loss.csv", *changes)


def test_stage_run_by_hand_with_other_arguments_verifies_current(built, tmp_path):
    """A training run by hand under the corrected protocol, put at the faithful run's path, then the figures
    rebuilt on it by Snakemake: `--verify` said 12 × current. Now the score job refuses to score that checkpoint
    as the faithful run (a plain `snakemake all` fails there, naming both), the encoder names the protocol it was
    made with and the one the workflow would use, and `mifeatures build` would retrain it."""
    root = copy_of(built, tmp_path)
    hand_train(root, "a", "--protocol", "corrected")
    said = snakemake(root, "all", check=False)
    assert said.returncode != 0
    assert "(adversarial prior True, seed 78), not of case a (adversarial prior False, seed 78)" in (
        said.stdout + said.stderr)
    code, verdicts = verify_all(root)
    assert code == 1
    encoder = f"results/train/{ARTICLE_RUN}/a/encoder.pt"
    assert any("--protocol corrected (now faithful)" in problem for problem in verdicts[encoder])
    assert "results/figures/maps_c_image10.png" not in drifted(verdicts)
    assert reruns(root)["train"] == 1


def test_maps_of_image_11_written_to_maps_c_image10_verifies_current(built, tmp_path):
    """The maps figure of image 11 written to `maps_c_image10.png` is not what that path's job makes."""
    root = copy_of(built, tmp_path)
    record = json.loads((root / "results/figures/maps_c_image10.png.prov.json").read_text())
    command = shlex.split(record["command"])
    command[command.index("--image") + 1] = "11"
    for option in ("--maps", "--bounds"):  # image 11's own maps, as its maps job wrote them
        command[command.index(option) + 1] = command[command.index(option) + 1].replace("image10", "image11")
    run(root, sys.executable, *command[1:])
    said = run(root, str(BIN / "mifeatures"), "provenance", "--verify", "results/figures/maps_c_image10.png",
               check=False)
    assert said.returncode == 1 and "--image 11 (now 10)" in said.stdout, said.stdout


@pytest.mark.parametrize("change", [{"data": {"dataset": "stl10"}}, {"train": {"seeds": [79, 78]}},
                                    {"cases": ["a", "c"]}], ids=["dataset", "seeds", "cases"])
def test_settings_that_choose_the_inputs_are_in_no_record(built, tmp_path, change):
    """With `data.dataset: stl10`, `seeds: [79, 78]` or `cases: [a, c]`, `--verify` said current while
    `snakemake -n` planned 24–28 jobs. Now every output Snakemake would rebuild is not current, and the
    outputs it would not rebuild are current: the two views agree."""
    root = copy_of(built, tmp_path)
    set_params(root, change)
    code, verdicts = verify_all(root)
    dry = snakemake(root, "-n", "all").stdout
    would_build = set(re.findall(r"^    output: (.*)$", dry, re.M))
    would_build = {path for line in would_build for path in line.split(", ") if not path.endswith(".prov.json")}
    assert code == 1 and would_build and would_build == drifted(verdicts), (would_build ^ drifted(verdicts))


def test_copied_checkout_is_verified_against_the_originals_config(built, tmp_path):
    """Records held each --configfile's absolute path: a copy was verified against the original's file, and
    failed with exit 2 once it was gone. They hold paths relative to the checkout now."""
    original = copy_of(built, tmp_path / "original")
    (original / "over.yaml").write_text("aggregate: {win_by: max}\n")
    snakemake(original, "all", "--configfile", "over.yaml")
    copy = copy_of(original, tmp_path / "second")
    (copy / "over.yaml").write_text("aggregate: {win_by: mean}\n")
    shutil.rmtree(original)
    code, verdicts = verify_all(copy)
    assert code == 1 and "results/figures/wins.png" in drifted(verdicts)
    assert "param aggregate.win_by: 'max' when made, 'mean' now" in verdicts["results/figures/wins.png"]
    record = json.loads((copy / "results/figures/wins.png.prov.json").read_text())
    assert record["config_files"] == ["params.yaml", "over.yaml"]


def test_all_checks_only_the_figures(built, tmp_path):
    """`--all` checked results/figures/*.png only: an edited metrics.json or article_losses.csv, or a figure
    whose record was deleted and whose PNG was corrupted, passed. Each is now a failure."""
    root = copy_of(built, tmp_path)
    metrics = root / "results/aggregate/metrics.json"
    values = json.loads(metrics.read_text())
    values["mean_mi"]["c"] = 0.99
    metrics.write_text(json.dumps(values))
    with (root / "results/article_losses.csv").open("a") as table:
        table.write("99,a,0.5,0.5\n")
    (root / "results/figures/wins.png.prov.json").unlink()
    (root / "results/figures/wins.png").write_bytes(b"not a png")
    code, verdicts = verify_all(root)
    assert code == 1
    assert drifted(verdicts) >= {"results/aggregate/metrics.json", "results/article_losses.csv",
                                 "results/figures/wins.png"}
    assert verdicts["results/figures/wins.png"][0].startswith("no provenance record")


def test_venv_of_one_checkout_verifies_another_with_its_own_code(built, tmp_path):
    """The CLI digested the code of the installed package, so a venv made in one checkout verified another
    with the first one's code. In a copy whose aggregation.py differs, the venv of this repository now sees
    the copy's code: the aggregate and the figures drawn from it are not current, the rest is."""
    root = copy_of(built, tmp_path)
    edit(root / "src/mifeatures/core/statistics/aggregation.py", 'WIN_STATISTICS = ("mean", "max")',
         'WIN_STATISTICS = ("max", "mean")')
    code, verdicts = verify_all(root)
    changed = {path for path, problems in verdicts.items()
               if "code mifeatures/core/statistics/aggregation.py: changed since aggregate ran it" in problems}
    assert code == 1 and "results/aggregate/metrics.json" in changed and "results/figures/wins.png" in changed
    assert f"results/train/{ARTICLE_RUN}/c/encoder.pt" not in drifted(verdicts)


def test_verify_all_from_another_directory_says_name_figures(built, tmp_path):
    """From outside a checkout `--all --verify` said "name figures or use --all"; it names the problem now."""
    said = run(tmp_path, str(BIN / "mifeatures"), "provenance", "--all", "--verify", check=False)
    assert said.returncode == 2 and "is not a mifeatures checkout (it has no workflow/Snakefile)" in said.stderr
    from_elsewhere = run(tmp_path, str(BIN / "mifeatures"), "provenance", "--all", "--verify", "--directory",
                         str(built), check=False)
    assert from_elsewhere.returncode == 0, from_elsewhere.stdout + from_elsewhere.stderr


@pytest.mark.parametrize("deleted", [f"results/score/{ARTICLE_RUN}/c/scored-faithful/summary.csv",
                                     f"results/train/{ARTICLE_RUN}/c/encoder.pt"])
def test_missing_intermediates_are_never_rebuilt(built, tmp_path, deleted):
    """A deleted table or checkpoint: `snakemake all` said "Nothing to be done" while `--verify` said DRIFTED.
    Both now agree that it is missing, and `snakemake all` rebuilds it and what depends on it."""
    root = copy_of(built, tmp_path)
    (root / deleted).unlink()
    code, verdicts = verify_all(root)
    assert code == 1 and verdicts[deleted][0].startswith("missing")
    assert planned(root)
    snakemake(root, "all")
    assert verify_all(root)[0] == 0 and planned(root) == {}


def test_swapping_two_lines_or_restating_a_value_retrains_all_four(built, tmp_path):
    """Params are compared as values: swapping the batch_size and lr lines, or restating `lr: 1E-4` in an
    override file and per case, retrained every case before."""
    root = copy_of(built, tmp_path)
    params = root / "params.yaml"
    lines = params.read_text().splitlines()
    batch, lr = (next(i for i, line in enumerate(lines) if line.strip().startswith(key))
                 for key in ("batch_size:", "lr:"))
    lines[batch], lines[lr] = lines[lr], lines[batch]
    params.write_text("\n".join(lines) + "\n")
    assert planned(root) == {}
    (root / "over.yaml").write_text("train:\n  lr: 1E-4\n  overrides: {c: {lr: 1.0e-4}}\n")
    assert planned(root, "--configfile", "over.yaml") == {}
    assert verify_all(root, "--params", "params.yaml", "over.yaml")[0] == 0


def test_power_loss_needs_snakemake_unlock(built, tmp_path):
    """Snakemake and its jobs killed mid-run (as by a power loss) left locks that failed every rerun with
    LockException until `snakemake --unlock`; the same command now resumes and finishes."""
    root = copy_of(built, tmp_path)
    set_params(root, {"train": {"overrides": {"d": {"lr": 5.0e-4}}}})
    shutil.rmtree(root / "results/logs")  # so that d's training log appearing means it is training
    command = [str(BIN / "snakemake"), "--cores", "1", "all"]
    with (tmp_path / "killed.log").open("w") as log:
        killed = subprocess.Popen(command, cwd=root, env=ENV, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        deadline = time.monotonic() + 120
        while not list((root / "results/logs/train").rglob("d.log")):
            assert killed.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()
            time.sleep(0.1)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
    assert list((root / ".snakemake/locks").iterdir())
    rerun = snakemake(root, "all")
    assert "the run that held it is gone" in rerun.stderr
    assert planned(root) == {} and verify_all(root)[0] == 0


def test_two_runs_with_disjoint_targets_both_run(built, tmp_path):
    """Snakemake locks files, not the folder, so two runs whose jobs share no output both run. That is safe
    here: each job writes only its own outputs (atomically) and its own records and metadata, a stage never
    writes outside its declared outputs, and a run that shares a file with a live one is refused."""
    root = copy_of(built, tmp_path)
    for figure in ("wins.png", "loss.png"):
        for path in (root / "results/figures").glob(f"{figure}*"):
            path.unlink()
    runs = [subprocess.Popen([str(BIN / "snakemake"), "--cores", "1", f"results/figures/{figure}"], cwd=root,
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for figure in ("wins.png", "loss.png")]
    said = [process.communicate(timeout=TIMEOUT)[0] for process in runs]
    assert [process.returncode for process in runs] == [0, 0], said
    assert drifted(verify_all(root)[1]) == {"results/provenance.txt"}  # it summarises the two new records
    snakemake(root, "all")
    assert verify_all(root)[0] == 0 and planned(root) == {}


def test_dvc_plots_name_one_seed_and_four_cases(built, tmp_path):
    """dvc.yaml's plots named results/train/faithful/seed78/{a..d}/loss.csv, so other seeds or cases broke
    `dvc plots show`. Its plots are the figures now: after `seeds: [79]` and `cases: [a, c]` and a build,
    `dvc plots show` renders every one of them, the MI distribution and the wins included."""
    root = copy_of(built, tmp_path)
    init_dvc(root)
    set_params(root, {"train": {"seeds": [79]}, "cases": ["a", "c"]})
    snakemake(root, "all")
    said = run(root, DVC, "plots", "show", "--json")
    shown = json.loads(said.stdout)["data"]
    assert {"results/figures/loss.png", "results/figures/mi_distribution.png", "results/figures/wins.png"} <= set(
        shown), said.stdout[:2000]
    for path, plot in shown.items():
        if path.endswith(".png"):
            with Image.open(plot[0]["url"]) as image:
                image.verify()
    assert "seed78" not in (root / "dvc.yaml").read_text()
    # The data plots: the loss a line per case (its template colours by case), the mean MI a bar per case.
    losses = pd.read_csv(root / "results/figures/loss.csv")
    loss_plot = shown["results/figures/loss.csv"][0]["content"]
    points = loss_plot["data"]["values"]
    assert len(points) == len(losses) and {point["case"] for point in points} == {"a", "c"}
    assert loss_plot["encoding"]["color"]["field"] == "case" and loss_plot["encoding"]["x"]["field"] == "step"
    bars = shown["results/aggregate/cases.csv"][0]["content"]["data"]["values"]
    assert sorted((bar["case"], float(bar["mean_mi"])) for bar in bars) == sorted(
        pd.read_csv(root / "results/aggregate/cases.csv")[["case", "mean_mi"]].itertuples(index=False, name=None))
