"""The GPU check: one command on a bare GPU machine measures the speed figures and runs as much of the
article's training as fits its time, through the real workflow.

    python3 benchmarks/device_check.py --prepare            # here, with registry access: fills .whl/
    python3 benchmarks/device_check.py --out "$OUT"          # there, in the checkout, carrying .whl/
    python3 benchmarks/device_check.py --out D --dry-run     # prints the commands and runs none
    python3 benchmarks/device_check.py --out D --rehearse    # the same path on a CPU, on the tiny config (CI)

On the GPU machine it
1. installs the carried wheels of what the machine lacks into a folder of its own (``--site``), with
   ``--no-deps``, never touching the machine's torch; the project itself runs from ``src/`` on
   ``PYTHONPATH``, not installed;
2. runs ``benchmarks/report.py --device cuda`` (step time per case and precision, determinism, scoring);
3. with the time left, builds ``snakemake --profile workflow/profiles/gpu`` on ``config/article.yaml``
   with the embedded sample at the article's 5 000 images (STL-10 cannot be downloaded there) and as
   many epochs as fit, which ``summary.md`` states beside the article's 50;
4. leaves in ``--out`` the benchmark table, the summary, the workflow's log and one archive of every
   table, record, log and figure it made (the device tool returns at most 8 files).
``--rehearse`` runs every step of it on a CPU, in minutes, so that a GPU's 15 minutes are not spent finding a
bug: the install, the benchmark's rows a CPU measures in seconds (MI, scoring, the no-op rows or why they were
not measured), the workflow through the same profile on config/tiny.yaml with ``train.device: cpu``, and the
packed results. CI runs it in a fresh Python 3.12 virtual environment holding only the GPU image's packages
(tests/test_device_check.py, .ci/gpu-image).
It ends within ``--budget`` seconds (default 450, under the device tool's 10 minutes a command), each part
under a timeout that stops its whole process group (a workflow's GPU jobs with it). The rules run ``python``;
where the machine has only ``python3``, the check puts a ``python`` on PATH first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".whl"
# What the workflow needs beyond the GPU machine's own packages (its image holds torch, numpy, pandas,
# scipy, scikit-learn, scikit-image, statsmodels, numba, matplotlib, tqdm, requests, PyYAML): the lock's
# versions, resolved with their dependencies for the machine's CPython 3.12.
CARRIED = ("snakemake", "pooch", "jsonschema")
PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
BENCHMARK_S = 240  # the benchmark's share of the budget, at most
EPOCH_S = 30.0  # all four cases' epoch at batch 10 on one GPU, pessimistic (H100: 12–16 ms a step, 1.29× shared)
FIXED_S = 120.0  # the workflow's work besides training: sample, grayscale, scoring 5 000 images, figures
ARTICLE_EPOCHS = 50
SAMPLE_IMAGES = 5000


def locked(name: str) -> str:
    """``name==version`` as requirements.lock pins it."""
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.split("==")[0].strip().lower() == name:
            return line.strip()
    raise ValueError(f"requirements.lock pins no {name}")


def resolve_command() -> list[str]:
    """pip's resolution of the carried packages and all they need, at the lock's versions, as a JSON report."""
    return [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
            "-c", str(REPO / "requirements.lock"), *map(locked, CARRIED)]


def download_command(requirement: str) -> list[str]:
    """One wheel for the machine's CPython, as PyPI has it built."""
    platforms = [item for platform in PLATFORMS for item in ("--platform", platform)]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON,
            "--implementation", "cp", *platforms, "-d", str(WHEELS), requirement]


def build_command(requirement: str) -> list[str]:
    """A wheel built here from the sdist, for a pure-Python package that PyPI has no wheel of."""
    return [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(WHEELS), requirement]


def prepare(dry_run: bool) -> int:
    """Fill .whl/ with a wheel of every package the carried ones need, at the lock's versions."""
    print(shlex.join(resolve_command()))
    if dry_run:
        return 0
    report = json.loads(subprocess.run(resolve_command(), check=True, capture_output=True, text=True).stdout)
    for item in report["install"]:
        requirement = f"{item['metadata']['name']}=={item['metadata']['version']}"
        if subprocess.run(download_command(requirement), check=False, capture_output=True).returncode:
            subprocess.run(build_command(requirement), check=True, capture_output=True)
    print(f"{len(list(WHEELS.glob('*.whl')))} wheels in {WHEELS}")
    print(f"then, on the GPU machine, with carry={json.dumps(CARRY)}:\n"
          "  python3 benchmarks/device_check.py --out \"$OUT\"")
    return 0


# The machine's own packages that a carried wheel must never replace.
MACHINE_OWN = ("torch", "numpy")


def wheel_version(wheel: Path) -> tuple[str, str]:
    """(distribution, version) of a wheel from its file name."""
    name, version = wheel.name.split("-")[:2]
    return name.replace("_", "-").lower(), version


def wheels_to_install(wheels: list[Path]) -> tuple[list[Path], list[str]]:
    """The wheels to install beside this Python (--target, ahead of its own packages on PYTHONPATH), and what
    differs from the lock: a distribution it lacks is installed; one it has at the wheel's version is not; one
    it has at another version is installed too, so that the workflow runs at the lock's versions, and said,
    except the machine's own torch and numpy, which stay and are said."""
    install, differences = [], []
    for wheel in wheels:
        name, version = wheel_version(wheel)
        try:
            present = metadata.version(name)
        except metadata.PackageNotFoundError:
            install.append(wheel)
            continue
        if present == version:
            continue
        if name in MACHINE_OWN:
            differences.append(f"{name} {present} kept (the lock has {version})")
        else:
            install.append(wheel)
            differences.append(f"{name} {version} installed over the machine's {present}")
    return install, differences


def python_shim(bin_dir: Path, path: str) -> Path | None:
    """A ``python`` in ``bin_dir`` that runs this interpreter when ``path`` has none, as on images with only
    python3. A script, not a symlink: a venv's Python started through a link elsewhere finds no pyvenv.cfg
    beside it and runs without the venv's packages (the rehearsal's jobs found no numpy)."""
    if shutil.which("python", path=path):
        return None
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "python"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    shim.chmod(0o755)
    return shim


def run_in_group(command: list[str], timeout: float, **options) -> int:
    """Run ``command`` in a process group of its own; past ``timeout`` the whole group is killed, so that no
    job it started (a Snakemake job on the GPU) outlives it. 124 on a timeout, as timeout(1) says."""
    process = subprocess.Popen(command, start_new_session=True, **options)
    try:
        return process.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return 124


CARRY = [".whl"]  # git ignores .whl/, so the device tool copies it only when told


def install_command(wheels: list[Path], site: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
            "--no-cache-dir", "--target", str(site), *map(str, wheels)]


def epochs_that_fit(seconds_left: float) -> int:
    """Epochs of the article's four trainings that fit ``seconds_left``, 1 … 50."""
    return max(1, min(ARTICLE_EPOCHS, math.floor((seconds_left - FIXED_S) / EPOCH_S)))


def workflow_override(epochs: int, rehearse: bool = False) -> dict:
    """The keys the check changes from its config: on the GPU, from config/article.yaml, the data it can have
    and the epochs that fit; in the rehearsal, config/tiny.yaml's jobs on the CPU."""
    if rehearse:  # the graphed step's CPU path: the same buffers, run eagerly
        return {"train": {"device": "cpu", "cuda_graph": True}}
    return {"data": {"dataset": "sample", "sample": {"n_images": SAMPLE_IMAGES}},
            "train": {"epochs": epochs, "device": "cuda", "cuda_graph": True}}


def workflow_command(override: Path, rehearse: bool = False) -> list[str]:
    config = "config/tiny.yaml" if rehearse else "config/article.yaml"
    return ["snakemake", "all", "--profile", "workflow/profiles/gpu", "--configfile", config, str(override)]


def benchmark_command(rehearse: bool = False) -> list[str]:
    """The benchmark: every row on the GPU; in the rehearsal, the rows a CPU measures in seconds."""
    if rehearse:
        return [sys.executable, "benchmarks/report.py", "--device", "cpu", "--sections", "mi", "scoring", "project",
                "sizes", "--sizes", "64"]
    return [sys.executable, "benchmarks/report.py", "--device", "cuda", "--sizes", "1000", "5000"]


def pack(out: Path) -> Path:
    """One archive of results/ (tables, records, logs, figures; no checkpoint or resume state)."""
    archive = out / "results.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted((REPO / "results").rglob("*")):
            if path.is_file() and path.suffix != ".pt":
                tar.add(path, arcname=str(path.relative_to(REPO)))
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="download the wheels to carry into .whl/ and stop")
    parser.add_argument("--out", type=Path, help="folder for what comes back (the device tool's $OUT)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds in all; default: %(default)s")
    parser.add_argument("--site", type=Path, default=Path("/tmp/site"), help="where carried wheels go")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run none")
    parser.add_argument("--rehearse", action="store_true",
                        help="every step on the CPU, on the tiny config, in minutes (what CI runs)")
    args = parser.parse_args(argv)
    if args.prepare:
        return prepare(args.dry_run)
    if args.out is None:
        parser.error("--out is needed, unless --prepare")
    start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), str(args.site),
                                                        os.environ.get("PYTHONPATH")])),
               PATH=os.pathsep.join([str(args.site / "bin"), os.environ["PATH"]]))

    def run(name: str, command: list[str], timeout: float, log: Path | None = None) -> int:
        print(f"[{time.monotonic() - start:5.0f} s] {name}: {shlex.join(command)}", flush=True)
        if args.dry_run:
            return 0
        sink = log.open("w") if log else None
        try:
            code = run_in_group(command, timeout, cwd=REPO, env=env, stdout=sink,
                                stderr=subprocess.STDOUT if sink else None)
        finally:
            if sink:
                sink.close()
        if code == 124:
            print(f"{name}: stopped after {timeout:.0f} s, with every process it started", flush=True)
        return code

    wheels, differences = wheels_to_install(sorted(WHEELS.glob("*.whl")))
    for difference in differences:
        print(f"versions: {difference}", flush=True)
    if wheels:
        run("install", install_command(wheels, args.site), 120)
    if not args.dry_run and (shim := python_shim(args.site / "bin", env["PATH"])):
        print(f"python: {shim} → {sys.executable} (this machine has no python on PATH)", flush=True)
    codes = {"benchmark": run("benchmark", benchmark_command(args.rehearse), BENCHMARK_S,
                              args.out / "benchmark.md")}
    left = args.budget - (time.monotonic() - start) if not args.dry_run else args.budget - BENCHMARK_S
    epochs = epochs_that_fit(left)
    override = args.out / "check.yaml"
    # JSON is YAML: --configfile reads it
    override.write_text(json.dumps(workflow_override(epochs, args.rehearse)) + "\n")
    workflow_started = time.monotonic()
    codes["workflow"] = run("workflow", workflow_command(override, args.rehearse), left - 15,
                            args.out / "workflow.log")
    ran = (f"the workflow ran {time.monotonic() - workflow_started:.0f} s, the whole check "
           f"{time.monotonic() - start:.0f} s of its {args.budget:.0f}")
    if args.rehearse:
        summary = ["# GPU check, rehearsed on the CPU", "", f"config/tiny.yaml on the CPU. Exit codes: {codes}; {ran}."]
    else:
        summary = [f"# GPU check: {epochs} of the article's {ARTICLE_EPOCHS} epochs",
                   "", f"The embedded sample at {SAMPLE_IMAGES} images stands in for STL-10; {epochs} epochs, "
                   f"the most that fitted {left:.0f} s. Exit codes: {codes}; {ran}."]
    summary += ["", *(f"- versions: {difference}" for difference in differences)]
    (args.out / "summary.md").write_text("\n".join(summary))
    if not args.dry_run and (REPO / "results").is_dir():
        pack(args.out)
    print("\n".join(summary))
    return max(codes.values())


if __name__ == "__main__":
    sys.exit(main())
