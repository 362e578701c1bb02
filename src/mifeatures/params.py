"""params.yaml: merging override files over it and validating it against its JSON schema."""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml


# Images in the STL-10 train split (the sample's count is its own setting).
STL10_TRAIN_IMAGES = 5000
# A number as YAML 1.2 spells it. PyYAML follows YAML 1.1, which reads "1e-05" (as DVC writes
# 1e-5) as a string; where the schema wants a number, such a string is read as one.
_YAML12_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


class ParamsError(ValueError):
    """params.yaml (or a config merged over it) breaks the schema."""


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    hint = error.schema.get("description") if isinstance(error.schema, dict) else None
    return f"{key}: {error.message}" + (f" ({hint})" if hint else "")


def validate_params(params: dict[str, Any], schema_path: str | Path, source: str = "params.yaml") -> None:
    """Raise ParamsError listing every key of ``params`` that breaks the schema or contradicts another key.

    Numbers that YAML 1.1 left as strings (``lr: 1e-05``) are first made numbers, in place, where
    the schema asks for one; so this is the one place params become typed values.

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
    _coerce_numbers(params, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(error) for error in errors] or _contradictions(params)
    if problems:
        raise ParamsError("\n".join(f"{source}: {problem}" for problem in problems))


def _coerce_numbers(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """``value`` with every YAML-1.2 number string made a number where ``schema`` expects one; in place.

    >>> _coerce_numbers({"lr": "1e-05", "url": "1e5"}, {"properties": {"lr": {"type": "number"}}}, {})
    {'lr': 1e-05, 'url': '1e5'}
    """
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rpartition("/")[2]]
    if isinstance(value, dict):
        for key, item in value.items():
            extra = schema.get("additionalProperties")
            sub = schema.get("properties", {}).get(key, extra if isinstance(extra, dict) else {})
            value[key] = _coerce_numbers(item, sub, root)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value[:] = [_coerce_numbers(item, schema["items"], root) for item in value]
    elif isinstance(value, str) and schema.get("type") in ("number", "integer") and _YAML12_NUMBER.fullmatch(value):
        number = float(value)
        return int(number) if number.is_integer() and re.fullmatch(r"[-+]?[0-9]+", value) else number
    return value


def _contradictions(params: dict[str, Any]) -> list[str]:
    """Keys that are each valid but cannot hold together, caught here rather than in a late job."""
    problems = []
    cases = params["cases"]
    for case in params["train"]["overrides"]:
        if case not in cases:
            problems.append(f"train.overrides.{case}: case {case!r} is not in cases {cases}; "
                            "add it to cases or remove its overrides")
    dataset = params["data"]["dataset"]
    count, where = ((params["data"]["sample"]["n_images"], "data.sample.n_images")
                    if dataset == "sample" else (STL10_TRAIN_IMAGES, "the STL-10 train split"))
    for image in params["figures"]["images"]:
        if image >= count:
            problems.append(f"figures.images: image {image} does not exist: {where} has {count} images, "
                            f"indices 0 to {count - 1}")
    return problems


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
    """Read params.yaml and override files (later files win), failing with the file name on bad YAML.

    The values are as YAML 1.1 reads them; ``validate_params`` makes them typed.
    """
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
