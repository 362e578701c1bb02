"""params.yaml: merging override files over it and validating it against its JSON schema."""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ParamsError(ValueError):
    """params.yaml (or a config merged over it) breaks the schema."""


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    hint = error.schema.get("description") if isinstance(error.schema, dict) else None
    return f"{key}: {error.message}" + (f" ({hint})" if hint else "")


def validate_params(params: dict[str, Any], schema_path: str | Path, source: str = "params.yaml") -> None:
    """Raise ParamsError listing every key of ``params`` that breaks the schema.

    Examples
    --------
    >>> schema = Path(__file__).parents[2] / "workflow/schemas/params.schema.yaml"
    >>> params = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
    >>> validate_params(params, schema)
    >>> params["train"]["lr"] = 0
    >>> validate_params(params, schema)
    Traceback (most recent call last):
    ...
    mifeatures.params.ParamsError: params.yaml: train.lr: 0 is less than or equal to the minimum of 0 (...)
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ParamsError("\n".join(f"{source}: {_describe(error)}" for error in errors))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``, as Snakemake merges ``--configfile`` files.

    >>> merge({"train": {"lr": 1e-4, "epochs": 50}}, {"train": {"epochs": 1}})
    {'train': {'lr': 0.0001, 'epochs': 1}}
    """
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_params(paths: list[str | Path]) -> dict[str, Any]:
    """Read params.yaml and override files (later files win), failing with the file name on bad YAML."""
    params: dict[str, Any] = {}
    for path in paths:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ParamsError(f"{path}: cannot read it as YAML ({error})") from error
        if not isinstance(loaded, dict):
            raise ParamsError(f"{path}: expected a mapping of sections, got {type(loaded).__name__}")
        params = merge(params, loaded)
    return params


def main(argv: list[str] | None = None) -> None:
    """CLI: check params.yaml (and override files) against the schema, as the workflow does."""
    parser = argparse.ArgumentParser(prog="mifeatures params", description=main.__doc__)
    parser.add_argument("files", nargs="*", default=["params.yaml"], help="params files, later override earlier; default: params.yaml")
    parser.add_argument("--schema", default="workflow/schemas/params.schema.yaml", help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        validate_params(load_params(args.files), args.schema, source=" + ".join(map(str, args.files)))
    except ParamsError as error:
        print(error, file=sys.stderr)
        sys.exit(1)
    print(f"{' + '.join(args.files)}: valid")


if __name__ == "__main__":
    main()
