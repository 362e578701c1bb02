"""benchmarks/device_check.py, the one command a GPU machine runs, dry-run here: its install and command
lines, not its speed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mifeatures.workflow.params import load_params, validate_params

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks/device_check.py"


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_prints_the_benchmark_and_the_workflow_and_writes_the_override(tmp_path):
    out = tmp_path / "out"
    said = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--dry-run"], capture_output=True,
                          text=True, check=True).stdout
    assert "benchmarks/report.py --device cuda" in said
    workflow = next(line for line in said.splitlines() if "workflow: snakemake" in line)
    assert workflow.endswith(f"snakemake all --profile workflow/profiles/gpu --configfile config/article.yaml "
                             f"{out / 'check.yaml'}")
    override = yaml.safe_load((out / "check.yaml").read_text())
    epochs = override["train"]["epochs"]
    assert 1 <= epochs <= 50 and f"# GPU check: {epochs} of the article's 50 epochs" in said


def test_the_override_is_a_valid_config_on_top_of_the_articles(tmp_path, check):
    """What the check builds passes the workflow's own validation: the sample at 5 000 images on CUDA."""
    path = tmp_path / "check.yaml"
    path.write_text(json.dumps(check.workflow_override(7)))
    config = load_params([REPO / "params.yaml", REPO / "config/article.yaml", path])
    validate_params(config, REPO / "workflow/schemas/params.schema.yaml")
    assert config["data"]["dataset"] == "sample" and config["data"]["sample"]["n_images"] == 5000
    assert config["train"]["epochs"] == 7 and config["train"]["device"] == "cuda"


def test_epochs_fit_the_time_left(check):
    assert check.epochs_that_fit(0) == 1
    assert check.epochs_that_fit(check.FIXED_S + 10 * check.EPOCH_S + 1) == 10
    assert check.epochs_that_fit(1e9) == 50


def test_the_install_keeps_the_machines_packages_and_never_its_torch(tmp_path, check):
    """Only wheels of distributions this Python lacks are installed, beside it (--target), with no
    dependency resolution that could pull another torch."""
    wheels = [tmp_path / name for name in ("torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl",
                                           "numpy-2.5.2-cp312-cp312-manylinux_2_28_x86_64.whl",
                                           "not_a_package_here-1.0-py3-none-any.whl")]
    assert check.missing_wheels(wheels) == wheels[2:]
    command = check.install_command(wheels[2:], tmp_path / "site")
    assert {"--no-deps", "--no-index", "--target"} <= set(command) and str(wheels[2]) in command


def test_prepare_resolves_the_locked_versions_and_carries_no_torch(check):
    command = check.resolve_command()
    assert "--dry-run" in command and str(REPO / "requirements.lock") in command
    pins = [item for item in command if "==" in item]
    assert [pin.split("==")[0] for pin in pins] == list(check.CARRIED) and not any("torch" in pin for pin in pins)
    assert all(pin in (REPO / "requirements.lock").read_text().splitlines() for pin in pins)
    download = check.download_command("snakemake==9.27.1")
    assert download[download.index("--python-version") + 1] == "3.12" and "--no-deps" in download
