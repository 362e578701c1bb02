"""The environment is pinned once: environment.yml mirrors pyproject.toml, and torch is the CPU pin."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_environment_yml_pins_exactly_the_runtime_dependencies():
    """conda users get the same packages at the same versions as pip users."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert sorted(requirement for requirement in pip if requirement != "-e .") == sorted(project["dependencies"])


def test_every_dependency_is_pinned_and_torch_is_the_local_cpu_release():
    """No range can pull another torch (and its GB of CUDA packages) or drift the numbers."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    assert all("==" in requirement for requirement in requirements)
    assert "torch==2.13.0" in project["dependencies"]
    assert not any(requirement.startswith("torchvision") for requirement in requirements)
