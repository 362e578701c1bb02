"""Ranges in pyproject.toml, exact versions in requirements.lock, and environment.yml agrees with both."""

from __future__ import annotations

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
    return [Requirement(text) for text in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]]


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
                for text in PROJECT["dependencies"]}
    assert {requirement for requirement in pip if requirement != "-e ."} == expected
