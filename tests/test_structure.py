"""The layering of the library, read from its import graph: thin stages over one core.

A stage is a module a rule runs (`python -m mifeatures.STAGE` in workflow/rules); it never imports another
stage, so a job's code digest (its rerun trigger) is its own stage's and the core it uses. The core holds
the science: it imports no stage, and never parses argv, writes provenance or reads params.yaml.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mifeatures import sources
from mifeatures.protocols import PROTOCOLS

REPO = Path(__file__).resolve().parents[1]
# The workflow's machinery around the science: params validation, provenance, code digests, the audit
# and its plan, sharing results, locks, and the command line.
TOOLS = {"__init__", "cli", "params", "provenance", "sources", "plan", "audit", "pull", "runlock", "records", "reconcile"}


def stages() -> set[str]:
    """The modules the rules run, read from workflow/rules."""
    text = "".join(path.read_text() for path in (REPO / "workflow/rules").glob("*.smk"))
    return set(re.findall(r"python -m mifeatures\.(\w+)", text))


def package_modules() -> set[str]:
    return {path.stem for path in sources.ROOT.glob("*.py")}


def test_every_rule_runs_a_stage_module_and_every_stage_has_a_rule():
    found = stages()
    assert found <= package_modules()
    assert {"sample", "download", "grayscale", "train", "score", "crosscheck", "aggregate", "findings",
            "figures", "article"} <= found


@pytest.mark.parametrize("stage", sorted(stages()))
def test_no_stage_imports_another_stage(stage):
    assert not sources._imports(stage) & (stages() - {stage})


def core() -> list[str]:
    return sorted(package_modules() - stages() - TOOLS)


@pytest.mark.parametrize("module", core())
def test_the_core_imports_no_stage_and_no_tool(module):
    assert not sources._imports(module) & (stages() | TOOLS)


@pytest.mark.parametrize("module", core())
def test_the_core_parses_no_argv(module):
    tree = ast.parse(sources.path(module).read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for alias in node.names} | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "argparse" not in names
    assert not any(isinstance(node, ast.Attribute) and node.attr == "argv" for node in ast.walk(tree))


def test_the_scorers_are_core_and_each_protocol_runs_its_own():
    """The score stage imports its protocol's scorer by name: only the corrected one runs the spatial null."""
    assert {protocol.scorer for protocol in PROTOCOLS.values()} <= set(core())
    assert "estimators" in sources.modules("score", PROTOCOLS["corrected"].scorer)
    assert "estimators" not in sources.modules("score", PROTOCOLS["faithful"].scorer)


def test_digests_follow_what_a_job_runs():
    """The download's code is its own; no training runs the MI estimator, nor the figures training code."""
    assert [stage for stage in stages() if "download" in sources.modules(stage)] == ["download"]
    assert "mi" not in sources.modules("train") and "train" not in sources.modules("figures")


def test_the_figures_run_no_network():
    """The maps figures draw the maps the score stage wrote: the figures stage neither loads torch nor imports
    what computes maps or MI, so an edit there redraws no figure."""
    assert not {"maps", "mi", "models", "score", "scoring"} & set(sources.modules("figures"))
    loaded = subprocess.run([sys.executable, "-c", "import sys, mifeatures.figures; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False"


def test_the_workflow_is_formatted_as_snakefmt_writes_it():
    """`snakefmt --check workflow` would change 2 files; it changes none, so a formatting diff is never mixed into a
    change of the rules."""
    checked = subprocess.run([str(Path(sys.executable).parent / "snakefmt"), "--check", str(REPO / "workflow")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_parsing_the_workflow_imported_torch(tmp_path):
    """Every `snakemake` call (a no-op `-n` took ≈ 3 s) spent 1.4 s importing torch to read the map sizes at
    parse time: the workflow now plans from mifeatures.shapes, and no module it imports loads torch."""
    shutil.copy(REPO / "params.yaml", tmp_path)
    probe = ("import atexit, sys; from snakemake.cli import main; "
             "atexit.register(lambda: print('torch loaded:', 'torch' in sys.modules)); main()")
    said = subprocess.run([sys.executable, "-c", probe, "-s", str(REPO / "workflow/Snakefile"), "-n", "all"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert "torch loaded: False" in said.stdout, said.stdout[-2000:] + said.stderr[-2000:]
    assert "Job stats:" in said.stdout
