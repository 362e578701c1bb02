"""Ranges in pyproject.toml, exact versions in requirements.lock, and environment.yml agrees with both."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def locked() -> dict[str, str]:
    """{normalised package name: exact version} of requirements.lock."""
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not an exact pin"
            pins[name.lower().replace("_", "-")] = version
    return pins


def declared() -> list[Requirement]:
    extras = PROJECT["optional-dependencies"]
    return [Requirement(text) for text in PROJECT["dependencies"] + extras["workflow"] + extras["test"]]


def test_every_dependency_is_a_bounded_range_that_the_lock_satisfies():
    """Users get compatible ranges; `make` gets the locked versions, which lie inside them."""
    pins = locked()
    for requirement in declared():
        assert any(spec.operator == "<" for spec in requirement.specifier), f"{requirement} has no upper bound"
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name]), f"locked {name}=={pins[name]} is outside {requirement}"


def test_torch_is_the_locked_release_and_torchvision_is_absent():
    """torch==2.13.0 (the local CPU wheel here); torchvision, a CUDA build that does not import here, stays out."""
    assert locked()["torch"] == "2.13.0"
    assert "torchvision" not in locked() and not any(r.name == "torchvision" for r in declared())


def test_environment_yml_pins_the_runtime_dependencies_at_the_locked_versions():
    """conda users get the same packages at the same versions as `make`."""
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    pins = locked()
    expected = {f"{Requirement(text).name}=={pins[Requirement(text).name.lower().replace('_', '-')]}"
                for text in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["workflow"]}
    assert {requirement for requirement in pip if requirement != "-e ."} == expected


def test_the_science_alone_installs_and_imports_without_the_workflow_tools():
    """`pip install mifeatures` (no extra) gives the core and the stages: no Snakemake, DVC or SLURM plugin among
    its dependencies, and importing every core and stage module loads none of them."""
    base = {Requirement(text).name for text in PROJECT["dependencies"]}
    assert not base & {"snakemake", "dvc", "snakemake-executor-plugin-slurm"}
    assert set(PROJECT["optional-dependencies"]["workflow"]) and "mifeatures" not in base
    package = REPO / "src/mifeatures"
    modules = sorted(".".join(path.relative_to(package.parent).with_suffix("").parts)
                     for layer in ("core", "stages") for path in (package / layer).rglob("*.py"))
    probe = f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; " \
            "print(sorted({'snakemake', 'dvc'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_license_and_citation_name_the_same_project():
    """A LICENSE file that pyproject declares (MIT), and a CITATION.cff (Citation File Format 1.2.0) with this
    version and licence that cites the article's code it reproduces."""
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert citation["version"] == PROJECT["version"] and citation["license"] == PROJECT["license"]
    assert {"title", "message", "authors"} <= citation.keys() and citation["authors"]
    assert any("Daily-Neural-Network-Practice-2" in reference.get("url", "") for reference in citation["references"])


# --- the jobs' conda environments (workflow/envs) -----------------------------------------------------

ENVS = REPO / "workflow/envs"
# conda-forge's name of a PyPI package, where they differ; and the package an import name belongs to.
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}
IMPORT_NAMES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow"}
WORKFLOW_TOOLS = {"snakemake", "dvc", "snakemake-executor-plugin-slurm", "mifeatures"}


def conda_pins(path: Path) -> dict[str, str]:
    environment = yaml.safe_load(path.read_text())
    assert environment["channels"] == ["conda-forge", "nodefaults"], path
    assert all(isinstance(item, str) for item in environment["dependencies"]), f"{path}: no pip section"
    pins = dict(item.split("==") if "==" in item else item.split("=") for item in environment["dependencies"])
    return pins


def test_every_job_environment_pins_the_locked_versions_and_no_workflow_tool():
    pypi = {conda: pypi for pypi, conda in CONDA_NAMES.items()}
    files = sorted(ENVS.glob("*.yaml"))
    assert {path.stem for path in files} == {"data", "torch", "tables", "figures"}
    for path in files:
        pins = conda_pins(path)
        assert pins.pop("python") == "3.11", path
        assert not set(pins) & WORKFLOW_TOOLS, path
        for name, version in pins.items():
            assert locked()[pypi.get(name, name)] == version, f"{path}: {name}=={version}"


def rule_environments() -> dict[str, tuple[str, set[str]]]:
    """{rule: (its environment's name, the mifeatures modules its shell command runs)}, from workflow/rules."""
    found = {}
    for path in (REPO / "workflow/rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule )", path.read_text()):
            rule = re.match(r"rule (\w+):", block.strip())
            if rule and "shell:" in block:
                env = re.search(r'conda:\s+ENVS\["(\w+)"\]', block)
                assert env, f"rule {rule[1]} names no environment of workflow/envs"
                found[rule[1]] = (env[1], set(re.findall(r"python -m mifeatures\.([\w.]+)", block)))
    return found


def third_party_imports(*modules: str) -> set[str]:
    """The distributions the package's ``modules`` import, at any depth of the code they run."""
    from mifeatures.workflow import sources
    names = set()
    for module in sources.modules(*modules):
        for node in ast.walk(ast.parse(sources.path(module).read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    names -= set(sys.stdlib_module_names) | {"mifeatures", "__future__", "snakemake"}  # plan's, for --verify only
    return {CONDA_NAMES.get(IMPORT_NAMES.get(name, name), IMPORT_NAMES.get(name, name)) for name in names}


def test_every_rule_environment_holds_what_its_code_imports():
    """`--sdm conda` gives each job the packages its stage (and, for score, both scorers) imports."""
    from mifeatures.core.protocols import PROTOCOLS
    rules = rule_environments()
    assert {"sample", "train", "score", "findings", "provenance", "figure_maps"} <= set(rules)
    for rule, (env, stages) in rules.items():
        scorers = tuple(protocol.scorer for protocol in PROTOCOLS.values()) if "score" in stages else ()
        needed = third_party_imports(*stages, *scorers)
        pinned = set(conda_pins(ENVS / f"{env}.yaml"))
        assert needed <= pinned, f"rule {rule} ({env}): lacks {needed - pinned}"
    assert "pytorch" not in conda_pins(ENVS / "tables.yaml") and "pytorch" not in conda_pins(ENVS / "data.yaml")


def apptainer_definition() -> tuple[str, set[str], str]:
    """(base image, packages of the pip install, its constraints file) of workflow/envs/apptainer.def."""
    text = (ENVS / "apptainer.def").read_text()
    base = re.search(r"^From:\s*(\S+)$", text, re.M)[1]
    post = re.search(r"^%post\n(.*?)(?=^%|\Z)", text, re.M | re.S)[1].replace("\\\n", " ")
    words = shlex.split(post)
    assert words[:2] == ["pip", "install"], post
    constraints = words[words.index("-c") + 1]
    packages = {word for word in words[2:] if not word.startswith("-") and word != constraints}
    files = re.search(r"^%files\n(.*?)(?=^%)", text, re.M | re.S)[1]
    assert f"requirements.lock {constraints}" in " ".join(files.split())
    return base, packages, constraints


def test_the_apptainer_image_holds_every_job_environment_at_the_locked_versions():
    """The image `--sdm apptainer` runs is the union of the four job environments, pinned by the lock
    copied in, on the environments' Python; no workflow tool."""
    base, packages, _ = apptainer_definition()
    pypi = {conda: pypi for pypi, conda in CONDA_NAMES.items()}
    union = {pypi.get(name, name) for path in ENVS.glob("*.yaml") for name in conda_pins(path) if name != "python"}
    assert packages == union
    assert packages <= set(locked()) and not packages & WORKFLOW_TOOLS
    assert {conda_pins(path)["python"] for path in ENVS.glob("*.yaml")} == {"3.11"}
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base


def test_every_rule_runs_in_the_one_image_the_definition_builds():
    """The Snakefile's global `container:` is the image the README's build command makes, and no rule
    names another (a rule's own `container:` would replace it)."""
    snakefile = (REPO / "workflow/Snakefile").read_text()
    assert re.search(r"^container: IMAGE$", snakefile, re.M)
    common = (REPO / "workflow/rules/common.smk").read_text()
    image = re.search(r'^IMAGE = "(.+)"$', common, re.M)[1]
    assert f"apptainer build {image} workflow/envs/apptainer.def" in (ENVS / "apptainer.def").read_text()
    assert f"apptainer build {image} workflow/envs/apptainer.def" in (REPO / "README.md").read_text()
    rules = (path.read_text() for path in (REPO / "workflow/rules").glob("*.smk"))
    assert not any(re.search(r"^\s+container:", text, re.M) for text in rules)
