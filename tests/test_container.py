"""`snakemake --sdm apptainer`: every job runs in the image of workflow/envs/apptainer.def.

apptainer is not installable on this project's machines (neither Debian nor PyPI has it, and no image
registry is reachable), so the image itself is never built here. What is tested is the workflow's side:
a missing image stops the run before any job, and with the image in place Snakemake hands every job's
command to apptainer with that image, and the commands run as Snakemake wraps them (`IMAGE bash -c '…'`).
A stand-in on PATH plays apptainer: it records each call and runs the command on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mifeatures.workflow.params import load_params

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPIED = ("workflow", "src", "config")
IMAGE = "mifeatures.sif"
# apptainer's command line as Snakemake writes it: `apptainer [--quiet --silent] exec --home DIR [--bind P]…
# [ARGS] IMAGE SHELL -c 'COMMAND'`. The stand-in records the image and the home, then runs SHELL -c COMMAND.
STAND_IN = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
if args == ["--version"]:
    print("apptainer version 1.3.4")
    sys.exit(0)
assert "exec" in args and args[-2] == "-c", args
image, shell, command = args[-4], args[-3], args[-1]
if not os.path.isfile(image):
    sys.exit(f"FATAL: could not open image {{image}}")
with open(os.environ["APPTAINER_CALLS"], "a") as calls:
    calls.write(json.dumps({{"image": image, "home": args[args.index("--home") + 1], "args": args[:-4],
                             "command": command}}) + "\\n")
os.execvp(shell, [shell, "-c", command])
"""


def project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copytree(REPO / name, root / name)
    tiny = load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"])
    (root / "params.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    return root


def snakemake(root: Path, bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
           "APPTAINER_CALLS": str(root / "apptainer-calls.jsonl")}
    return subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--sdm", "apptainer", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)


def stand_in(folder: Path) -> Path:
    folder.mkdir()
    (folder / "apptainer").write_text(STAND_IN)
    (folder / "apptainer").chmod(0o755)
    return folder


def test_a_missing_image_stops_even_a_dry_run_naming_the_build_command(tmp_path):
    root = project(tmp_path / "project")
    for dry in (("-n",), ()):
        result = snakemake(root, stand_in(tmp_path / f"bin{len(dry)}"), *dry, "--", "all")
        assert result.returncode == 1
        assert (f"--sdm apptainer: the image {IMAGE} is not in {root}; build it there first: "
                f"apptainer build {IMAGE} workflow/envs/apptainer.def") in result.stdout + result.stderr
        assert not (root / "results").exists() and not (root / "apptainer-calls.jsonl").exists()


def test_every_job_runs_through_apptainer_with_the_image_and_the_gpus(tmp_path):
    """One article map figure, end to end through the GPU profile: jobs of the data, torch and figures
    environments, each given the image and the profile's --nv (the node's GPUs)."""
    root = project(tmp_path / "project")
    (root / IMAGE).write_bytes(b"")
    target = "results/figures/maps_a_image10.png"
    result = snakemake(root, stand_in(tmp_path / "bin"), "--profile", "workflow/profiles/gpu", "--", target)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    calls = [json.loads(line) for line in (root / "apptainer-calls.jsonl").read_text().splitlines()]
    ran = {call["command"].split("python -m mifeatures.stages.")[1].split()[0] for call in calls}
    assert ran == {"sample", "grayscale", "train", "score", "maps", "figures"}, ran
    jobs = int(result.stderr.split(" of ")[-1].split(" steps")[0])
    assert len(calls) == jobs and all(call["image"] == IMAGE and call["home"] == str(root) and "--nv" in call["args"]
                                 for call in calls)
    assert (root / target).stat().st_size > 0 and (root / f"{target}.prov.json").is_file()
