"""The project in temporary copies on the tiny config: building it, running its tools in it, editing it, and
reading what its runs planned, rebuilt and verified. Shared by the whole-workflow test files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from mifeatures.workflow.params import load_params, merge

REPO = Path(__file__).resolve().parents[1]


BIN = Path(sys.executable).parent


ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


COPIED = ("workflow", "src", "config", "environment.yml", "dvc.yaml", ".dvcignore")


TIMEOUT = 900  # seconds; no subprocess of these tests may run longer


DVC = str(BIN / "dvc")


GIT_USER = ("-c", "user.name=mifeatures tests", "-c", "user.email=tests@example.invalid",
            "-c", "commit.gpgsign=false")


ARTICLE_RUN = "faithful/seed78"  # the run behind the article's figures: protocol, first seed


def run(root: Path, *command: str, check: bool = True, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run a command of the project's environment in ``root``; fail with its output when asked."""
    result = subprocess.run(command, cwd=root, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def snakemake(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(root, str(BIN / "snakemake"), "--cores", "4", *args, check=check)


def outputs(root: Path) -> dict[str, int]:
    """mtime (ns) of every result file except logs, keyed by path relative to results/."""
    return {
        str(path.relative_to(root / "results")): path.stat().st_mtime_ns
        for path in (root / "results").rglob("*")
        if path.is_file() and "logs" not in path.parts
    }


def set_params(root: Path, change: dict) -> None:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), change), sort_keys=False))


def build_tiny(root: Path) -> Path:
    """Copy the project to ``root`` with params.yaml = params.yaml + config/tiny.yaml, and build it."""
    for name in COPIED:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    tiny = load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"])
    (root / "params.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    snakemake(root, "all")
    return root


def init_dvc(root: Path) -> None:
    """git init and dvc init in ``root`` (no analytics, Snakemake's state not in git)."""
    (root / ".gitignore").write_text("/.snakemake/\n__pycache__/\n*.egg-info/\n")
    run(root, "git", "init", "-q")
    run(root, DVC, "init", "-q")
    run(root, DVC, "config", "core.analytics", "false")


def planned(root: Path, *args: str, target: str = "all") -> dict[str, int]:
    """{rule: number of jobs} that `snakemake -n TARGET` would run now."""
    dry = snakemake(root, "-n", target, *args).stdout
    if "Nothing to be done" in dry:
        return {}
    table = dry[dry.index("Job stats:"):dry.index("Reasons:")]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if rule != "total"}


def edit(path: Path, old: str, new: str) -> str:
    """Replace ``old`` by ``new`` in ``path``; return the original text (to restore it)."""
    original = path.read_text()
    assert old in original, f"{old!r} not in {path}"
    path.write_text(original.replace(old, new, 1))
    return original


def clone_of(root: Path, parent: Path) -> Path:
    clone = parent / "clone"
    run(root.parent, "git", "clone", "-q", str(root), str(clone))
    assert not (clone / "data").exists() and not (clone / "results").exists()
    return clone


def copy_of(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)
    return copy


def verify_all(root: Path, *args: str) -> tuple[int, dict[str, list[str]]]:
    """`mifeatures provenance --all --verify` in ``root``: (exit code, {output: its problems})."""
    said = run(root, str(BIN / "mifeatures"), "provenance", "--all", "--verify", *args, check=False)
    verdicts: dict[str, list[str]] = {}
    path = None  # the output whose problems the indented lines below it list
    for line in said.stdout.splitlines():
        if line.startswith("  - "):
            verdicts[path].append(line[4:])
        elif ": " in line and not line.startswith("("):
            path = line.split(": ")[0]
            verdicts[path] = []
    assert said.returncode in (0, 1), said.stdout + said.stderr
    return said.returncode, verdicts


def drifted(verdicts: dict[str, list[str]]) -> set[str]:
    return {path for path, problems in verdicts.items() if problems}


MIFEATURES = str(BIN / "mifeatures")


def reruns(root: Path, *args: str) -> dict[str, int]:
    """{rule: jobs} that `mifeatures build -n` would rerun: those whose records do not match, and their readers."""
    said = run(root, MIFEATURES, "build", "-n", *args)
    return dict(Counter(re.findall(r"^  rerun (\w+)", said.stderr, re.M)))
