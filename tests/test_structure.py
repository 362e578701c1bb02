"""The layering of the library, read from its import graph and its folders: three layers, one folder each.

- ``stages/``: the modules the rules run (`python -m mifeatures.stages.STAGE` in workflow/rules), one per rule;
  no stage imports another, so a job's code digest (its rerun trigger) is its own stage's and what it uses.
- ``core/``: the science, grouped by topic; it imports nothing of the other two layers, and never parses
  argv, writes provenance or reads params.yaml.
- ``workflow/``: the machinery around them (params, provenance, code digests, the audit, build, pull, locks,
  memory); it may use the core, never a stage.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mifeatures.workflow import sources
from mifeatures.core.protocols import PROTOCOLS

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("core", "stages", "workflow")
TOP = {"__init__", "cli"}  # the package's own: lazy public names and the command line


def package_modules() -> set[str]:
    """Every module of the package, by its dotted name below it (subpackages' ``__init__`` as the package)."""
    return {sources.name(f"{sources.PACKAGE}/{path.relative_to(sources.ROOT).as_posix()}")
            for path in sources.ROOT.rglob("*.py")}


def layer(name: str) -> set[str]:
    return {module for module in package_modules() if module == name or module.startswith(f"{name}.")}


def stages() -> set[str]:
    """The modules the rules run, read from workflow/rules."""
    text = "".join(path.read_text() for path in (REPO / "workflow/rules").glob("*.smk"))
    return set(re.findall(r"python -m mifeatures\.([\w.]+)", text))


def test_every_module_is_in_one_layer_and_no_folder_is_crowded():
    assert package_modules() == TOP | set().union(*map(layer, LAYERS))
    folders = {path.parent for path in sources.ROOT.rglob("*.py")}
    for folder in folders:
        assert len(list(folder.glob("*.py"))) <= 15, f"{folder} holds more than 15 modules: group them by topic"


def test_every_rule_runs_a_stage_module_and_every_stage_has_a_rule():
    assert stages() == layer("stages") - {"stages"}
    assert {f"stages.{name}" for name in ("sample", "download", "folder", "grayscale", "train", "score", "maps",
                                           "crosscheck", "aggregate", "findings", "figures", "article",
                                           "provenance")} == stages()


@pytest.mark.parametrize("stage", sorted(stages()))
def test_no_stage_imports_another_stage(stage):
    assert not sources._imports(stage) & (stages() - {stage})


@pytest.mark.parametrize("module", sorted(layer("core")))
def test_the_core_imports_no_stage_and_no_machinery(module):
    assert not sources._imports(module) & (layer("stages") | layer("workflow") | TOP)


@pytest.mark.parametrize("module", sorted(layer("workflow")))
def test_the_machinery_imports_no_stage(module):
    assert not sources._imports(module) & layer("stages")


@pytest.mark.parametrize("module", sorted(layer("core")))
def test_the_core_parses_no_argv(module):
    tree = ast.parse(sources.path(module).read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for alias in node.names} | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "argparse" not in names
    assert not any(isinstance(node, ast.Attribute) and node.attr == "argv" for node in ast.walk(tree))


def test_the_scorers_are_core_and_each_protocol_runs_its_own():
    """The score stage imports its protocol's scorer by name: only the corrected one runs the spatial null."""
    assert {protocol.scorer for protocol in PROTOCOLS.values()} <= layer("core")
    null = "core.information.estimators"
    assert null in sources.modules("stages.score", PROTOCOLS["corrected"].scorer)
    assert null not in sources.modules("stages.score", PROTOCOLS["faithful"].scorer)


def test_digests_follow_what_a_job_runs():
    """The download's code is its own; no training runs the MI estimator, nor the figures training code."""
    assert [stage for stage in stages() if "stages.download" in sources.modules(stage)] == ["stages.download"]
    assert "core.information.mi" not in sources.modules("stages.train")
    assert not {"stages.train", "core.networks.training"} & set(sources.modules("stages.figures"))


def test_the_figures_run_no_network():
    """The maps figures draw the maps the score stage wrote: the figures stage neither loads torch nor imports
    what computes maps or MI, so an edit there redraws no figure."""
    network = {"core.information.maps", "core.information.mi", "core.networks.models", "stages.score",
               "core.information.scoring"}
    assert not network & set(sources.modules("stages.figures"))
    loaded = subprocess.run([sys.executable, "-c",
                             "import sys, mifeatures.stages.figures; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False"


def test_the_workflow_is_formatted_as_snakefmt_writes_it():
    """`snakefmt --check workflow` would change 2 files; it changes none, so a formatting diff is never mixed into a
    change of the rules."""
    checked = subprocess.run([str(Path(sys.executable).parent / "snakefmt"), "--check", str(REPO / "workflow")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_code_passes_its_lint():
    """`ruff check` (pyproject's rules: pycodestyle and pyflakes at 120 columns) finds nothing in the library,
    its tests and benchmarks."""
    checked = subprocess.run([str(Path(sys.executable).parent / "ruff"), "check", "--no-cache", "src", "tests",
                              "benchmarks"], cwd=REPO, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_parsing_the_workflow_imported_torch(tmp_path):
    """Every `snakemake` call (a no-op `-n` took ≈ 3 s) spent 1.4 s importing torch to read the map sizes at
    parse time: the workflow now plans from mifeatures.core.networks.shapes, and no module it imports loads torch."""
    shutil.copy(REPO / "params.yaml", tmp_path)
    probe = ("import atexit, sys; from snakemake.cli import main; "
             "atexit.register(lambda: print('torch loaded:', 'torch' in sys.modules)); main()")
    said = subprocess.run([sys.executable, "-c", probe, "-s", str(REPO / "workflow/Snakefile"), "-n", "all"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert "torch loaded: False" in said.stdout, said.stdout[-2000:] + said.stderr[-2000:]
    assert "Job stats:" in said.stdout
