"""benchmarks/device_check.py, the one command a GPU machine runs, dry-run here: its install and command
lines, not its speed."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import psutil
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


def test_the_install_keeps_the_machines_torch_and_brings_the_locks_other_versions(tmp_path, check):
    """`missing_wheels` skipped a package present in any version and installed with --no-deps, so a version
    conflict with the machine's packages went unseen. Now a package it lacks is installed; one at the wheel's
    version is not; one at another version is installed beside it (the workflow runs at the lock's versions)
    and said; torch and numpy are the machine's own: kept, and said."""
    here = {name: importlib.metadata.version(name) for name in ("torch", "numpy", "pytest", "pyyaml")}
    wheels = [tmp_path / name for name in ("torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl",
                                           f"numpy-{here['numpy']}-cp312-cp312-manylinux_2_28_x86_64.whl",
                                           "pytest-1.0-py3-none-any.whl",
                                           f"PyYAML-{here['pyyaml']}-cp312-cp312-manylinux_2_28_x86_64.whl",
                                           "not_a_package_here-1.0-py3-none-any.whl")]
    install, differences = check.wheels_to_install(wheels)
    assert install == [wheels[2], wheels[4]]
    assert differences == [f"torch {here['torch']} kept (the lock has 2.11.0)",
                           f"pytest 1.0 installed over the machine's {here['pytest']}"]
    command = check.install_command(install, tmp_path / "site")
    assert {"--no-deps", "--no-index", "--target"} <= set(command) and str(wheels[4]) in command


def test_a_python_is_put_on_path_where_the_machine_has_only_python3(tmp_path, check):
    """Every rule runs `python -m mifeatures…`; an image may have only python3. The shim runs this interpreter
    with its packages: as a symlink, a venv's Python ran without them (the rehearsal's jobs found no numpy)."""
    only_python3 = tmp_path / "usr_bin"
    only_python3.mkdir()
    (only_python3 / "python3").symlink_to(sys.executable)
    shim = check.python_shim(tmp_path / "site/bin", str(only_python3))
    said = subprocess.run(["python", "-c", "import sys, yaml; print(sys.prefix)"], capture_output=True, text=True,
                          env={"PATH": f"{shim.parent}{os.pathsep}{only_python3}"}, check=True).stdout
    assert said.strip() == sys.prefix
    assert check.python_shim(tmp_path / "other/bin", os.environ["PATH"]) is None  # this machine has one


def test_a_timeout_stops_every_process_the_part_started(tmp_path, check):
    """On a timeout only snakemake was killed: its GPU jobs kept running while the results were packed."""
    pids = tmp_path / "child.pid"
    started = time.monotonic()
    code = check.run_in_group(["bash", "-c", f"sleep 60 & echo $! > {pids}; wait"], timeout=2)
    assert code == 124 and time.monotonic() - started < 30
    child = int(pids.read_text())
    time.sleep(0.5)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_prepare_names_what_to_carry_and_the_command(check, capsys, monkeypatch):
    """.whl/ is git-ignored, so the device tool copies it only when its carry list names it; nothing said so."""
    monkeypatch.setattr(check.subprocess, "run", lambda command, **_: subprocess.CompletedProcess(
        command, 0, stdout=json.dumps({"install": []})))
    check.prepare(dry_run=False)
    said = capsys.readouterr().out
    assert 'carry=[".whl"]' in said and 'python3 benchmarks/device_check.py --out "$OUT"' in said


def test_the_report_says_which_tool_is_missing_instead_of_failing(monkeypatch):
    """benchmarks/report.py ran dvc and snakemake from beside sys.executable, where the device check's carried
    tools are not: it raised before its scoring rows. It finds them on PATH and says what is missing."""
    spec = importlib.util.spec_from_file_location("report", REPO / "benchmarks/report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(report, "BIN", Path("/nonexistent"))
    assert report.project_rows(None) == [("no-op `snakemake -n all` and `dvc repro` (tiny project)", "",
                                          "not measured: no git or dvc or snakemake on PATH", None)]


def test_prepare_resolves_the_locked_versions_and_carries_no_torch(check):
    command = check.resolve_command()
    assert "--dry-run" in command and str(REPO / "requirements.lock") in command
    pins = [item for item in command if "==" in item]
    assert [pin.split("==")[0] for pin in pins] == list(check.CARRIED) and not any("torch" in pin for pin in pins)
    assert all(pin in (REPO / "requirements.lock").read_text().splitlines() for pin in pins)
    download = check.download_command("snakemake==9.27.1")
    assert download[download.index("--python-version") + 1] == "3.12" and "--no-deps" in download


# The GPU image's Python for the rehearsal (.ci/gpu-image makes .venv-gpu-image; CI sets this to its python).
IMAGE_PYTHON = os.environ.get("MIFEATURES_GPU_IMAGE")


def device_tool_copy(destination: Path) -> Path:
    """The checkout as the device tool copies it: tracked files and untracked ones git does not ignore, and the
    carried .whl/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in [name for name in listed if name and (REPO / name).is_file()] + \
            [str(wheel.relative_to(REPO)) for wheel in (REPO / ".whl").glob("*.whl")]:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, destination / name)
    return destination


@pytest.mark.slow
@pytest.mark.skipif(not IMAGE_PYTHON, reason="the rehearsal needs the GPU image's Python: run .ci/gpu-image, then "
                    "MIFEATURES_GPU_IMAGE=.venv-gpu-image/bin/python (CI does both)")
def test_the_gpu_check_rehearsed_on_the_cpu_in_the_images_python(tmp_path):
    """The GPU check end to end as the GPU machine would run it, on the CPU: the image's Python 3.12 with only
    its own packages (torch from PyPI's 2.11 line), `python3` and no `python` on PATH, no dvc, no index; the
    carried wheels installed, the benchmark's CPU rows, the workflow through the GPU profile on the tiny
    config, the packed results."""
    checkout = device_tool_copy(tmp_path / "checkout")
    assert list((checkout / ".whl").glob("snakemake-*.whl")), "no carried wheels: run .ci/gpu-image first"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {IMAGE_PYTHON} "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    out, site = tmp_path / "out", tmp_path / "site"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "PIP_NO_INDEX": "1"}
    said = subprocess.run(["python3", "benchmarks/device_check.py", "--out", str(out), "--rehearse",
                           "--budget", "900", "--site", str(site)], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert said.returncode == 0, said.stdout + said.stderr + (out / "workflow.log").read_text()
    assert "(this machine has no python on PATH)" in said.stdout
    benchmark = (out / "benchmark.md").read_text()
    assert re.search(r"Python 3\.12\.\d+, torch 2\.11\.", benchmark), benchmark  # the image's own, untouched
    assert "| MI, 1 image × 32 maps" in benchmark and "| scoring, case c, 64 images |" in benchmark
    assert "not measured: no dvc on PATH" in benchmark
    summary = (out / "summary.md").read_text()
    assert "Exit codes: {'benchmark': 0, 'workflow': 0}" in summary
    with tarfile.open(out / "results.tar.gz") as archive:
        names = set(archive.getnames())
    figures = {"loss", "chosen_mean_mi", "mi_distribution", "wins", "maps_a_image10", "maps_d_image11"}
    assert {f"results/figures/{name}.png" for name in figures} <= names
    assert "results/figures/loss.png.prov.json" in names and not any(name.endswith(".pt") for name in names)
