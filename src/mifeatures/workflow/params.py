"""params.yaml: merging override files over it and validating it against its JSON schema."""

from __future__ import annotations

import argparse
import copy
import math
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mifeatures.workflow import usage

# Images in the STL-10 train split (the sample's count is its own setting).
STL10_TRAIN_IMAGES = 5000
# A number as YAML 1.2 spells it. PyYAML follows YAML 1.1, which reads "1e-05" (as DVC writes
# 1e-5) as a string; where the schema wants a number, such a string is read as one. An integer
# key takes digits only: "1e0" is refused there, as 1.0 is.
_YAML12_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DIGITS = re.compile(r"[-+]?[0-9]+")
# Plain scalars that Snakemake's YAML 1.1 (PyYAML) and DVC's YAML 1.2 (ruamel) read as different
# values: `010` is 8 to one and 10 to the other, `1:30` is 90 or a string, `yes` True or a string.
_AMBIGUOUS = {
    "a leading zero (YAML 1.1 reads 010 as octal 8, DVC's YAML 1.2 as 10)": re.compile(r"[-+]?0[0-9_]+"),
    "an octal prefix (a string to YAML 1.1, 8 for 0o10 to DVC's YAML 1.2)": re.compile(r"[-+]?0o[0-7]+"),
    "a sexagesimal number (YAML 1.1 reads 1:30 as 90, DVC's YAML 1.2 as a string)":
        re.compile(r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?"),
    "a YAML 1.1 boolean (True or False to YAML 1.1, a string to DVC's YAML 1.2)":
        re.compile(r"y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF"),
}


def _is_integer(_, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(_, value: Any) -> bool:
    return _is_integer(_, value) or isinstance(value, float) and math.isfinite(value)


# jsonschema counts 1.0 as an integer; a job's argparse does not. Integers here are ints only. And a number is
# finite: NaN passes every bound (each comparison is false) and an infinite margin or weight passes its minimum.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_finite_number}),
)


class ParamsError(ValueError):
    """params.yaml (or a config merged over it) breaks the schema."""


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    hint = error.schema.get("description") if isinstance(error.schema, dict) else None
    value = error.instance
    message = (f"{value} is not a finite number" if isinstance(value, float) and not math.isfinite(value)
               else error.message)
    return f"{key}: {message}" + (f" ({hint})" if hint else "")


def validate_params(params: dict[str, Any], schema_path: str | Path, source: str = "params.yaml") -> None:
    """Raise ParamsError listing every key of ``params`` that breaks the schema or contradicts another key.

    Numbers that YAML 1.1 left as strings (``lr: 1e-05``) are first made numbers, in place, where
    the schema asks for one; so this is the one place params become typed values.

    Examples
    --------
    >>> schema = Path(__file__).parents[3] / "workflow/schemas/params.schema.yaml"
    >>> params = yaml.safe_load((Path(__file__).parents[3] / "params.yaml").read_text())
    >>> validate_params(params, schema)
    >>> params["train"]["lr"] = 0
    >>> validate_params(params, schema)
    Traceback (most recent call last):
    ...
    mifeatures.workflow.params.ParamsError: params.yaml: train.lr: 0 is less than or equal to the minimum of 0 (...)
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    _coerce_numbers(params, schema, schema)
    validator = _Validator(schema)
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
    elif isinstance(value, str) and schema.get("type") == "integer" and _DIGITS.fullmatch(value):
        return int(value)
    elif isinstance(value, str) and schema.get("type") == "number" and _YAML12_NUMBER.fullmatch(value):
        return float(value)
    return value


def folder_images(params: dict[str, Any]) -> list[Path]:
    """The image files of data.folder.path in the dataset's order (mifeatures.core.data.folder.image_files)."""
    from mifeatures.core.data.folder import FolderError, image_files

    path = params["data"]["folder"]["path"]
    if path is None:
        raise FolderError("not set; data.dataset: folder needs the folder of your PNG and JPEG files")
    return image_files(path)


def _contradictions(params: dict[str, Any]) -> list[str]:
    """Keys that are each valid but cannot hold together, caught here rather than in a late job."""
    problems = []
    cases = params["cases"]
    for case in params["train"]["overrides"]:
        if case not in cases:
            problems.append(f"train.overrides.{case}: case {case!r} is not in cases {cases}; "
                            "add it to cases or remove its overrides")
    dataset = params["data"]["dataset"]
    if dataset == "folder":
        from mifeatures.core.data.folder import FolderError

        try:
            files = folder_images(params)
        except FolderError as error:
            return [*problems, f"data.folder.path: {error}"]
        count, where = len(files), f"the folder {params['data']['folder']['path']}"
    elif dataset == "sample":
        count, where = params["data"]["sample"]["n_images"], "data.sample.n_images"
    else:
        count, where = STL10_TRAIN_IMAGES, "the STL-10 train split"
    for image in params["figures"]["images"]:
        if image >= count:
            problems.append(f"figures.images: image {image} does not exist: {where} has {count} images, "
                            f"indices 0 to {count - 1}")
    batch_sizes = {"train.batch_size": params["train"]["batch_size"]} | {
        f"train.overrides.{case}.batch_size": override["batch_size"]
        for case, override in params["train"]["overrides"].items() if "batch_size" in override}
    for key, batch_size in batch_sizes.items():
        if batch_size > count:
            problems.append(f"{key}: {batch_size} exceeds the {count} images of {where}; a training step "
                            f"needs a full batch (at most {count})")
    for case in cases:
        train = case_train(params, case)
        if train["cuda_graph"] and (train["precision"] == "bf16" or train["together"]):
            problems.append(f"train.cuda_graph: true for case {case}, with "
                            + ("precision bf16" if train["precision"] == "bf16" else "train.together: true")
                            + ": a CUDA graph replays one seed's step in fp32 or tf32; set cuda_graph: false or "
                            + ("precision: fp32" if train["precision"] == "bf16" else "together: false"))
    if params["train"]["together"]:
        for case in cases:
            if case_train(params, case)["precision"] == "bf16":
                overridden = "precision" in params["train"]["overrides"].get(case, {})
                where = f"train.overrides.{case}" if overridden else "train"
                problems.append(f"train.together: true, but {where}.precision is bf16 (case {case}): seeds are "
                                "trained together in fp32 or tf32 only (bf16's prior draws follow the maps' dtype); "
                                "set precision: fp32 or together: false")
    ksg = params["score"]["ksg"]
    if ksg["neighbors"] >= ksg["pixels"]:
        problems.append(f"score.ksg.neighbors: {ksg['neighbors']} is not below score.ksg.pixels "
                        f"({ksg['pixels']}); the k-NN estimate needs more pixels than neighbours")
    return problems


def case_train(params: dict[str, Any], case: str) -> dict[str, Any]:
    """The train section as it applies to ``case``: its overrides (``train.overrides.CASE``) over the shared
    values, the overrides themselves left out. The workflow hands a training job these values, and the audit
    compares a record with them: one resolution for both."""
    train = params.get("train", {})
    shared = {key: value for key, value in train.items() if key != "overrides"}
    return shared | train.get("overrides", {}).get(case, {})


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


def read_yaml(text: str, name: str) -> Any:
    """``text`` as YAML, refusing what Snakemake's YAML 1.1 and DVC's YAML 1.2 would read differently:
    a key given twice (Snakemake takes the last, DVC refuses the file) and the spellings in _AMBIGUOUS.

    >>> read_yaml("seed: 010", "params.yaml")
    Traceback (most recent call last):
    ...
    mifeatures.workflow.params.ParamsError: params.yaml, line 1: seed: '010' has a leading zero (...); write it ...
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    stack = [(root, None)] if root is not None else []
    while stack:
        node, key = stack.pop()
        where = f"{name}, line {node.start_mark.line + 1}"
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, value_node in node.value:
                if key_node.value in seen:
                    raise ParamsError(f"{name}, line {key_node.start_mark.line + 1}: key {key_node.value!r} "
                                      "given twice in one mapping; "
                                      "Snakemake would take the last, DVC refuses the file: keep one")
                seen.add(key_node.value)
                stack.append((value_node, key_node.value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, key) for item in node.value)
        elif node.style is None:  # plain scalars only: a quoted '010' is a string to both
            for problem, pattern in _AMBIGUOUS.items():
                if pattern.fullmatch(node.value):
                    raise ParamsError(f"{where}: {key}: {node.value!r} has {problem}; write it without "
                                      "(a plain decimal number, true or false, or a quoted string)")
    return yaml.safe_load(text)


def load_params(paths: list[str | Path]) -> dict[str, Any]:
    """Read params.yaml and override files (later files win), failing with the file name on bad YAML.

    The values are as YAML 1.1 reads them, where YAML 1.2 (DVC) agrees (``read_yaml``);
    ``validate_params`` makes them typed.
    """
    params: dict[str, Any] = {}
    for path in paths:
        try:
            loaded = read_yaml(Path(path).read_text(), str(path))
        except (OSError, yaml.YAMLError) as error:
            raise ParamsError(f"{path}: cannot read it as YAML ({error})") from error
        if not isinstance(loaded, dict):
            raise ParamsError(f"{path}: expected a mapping of sections, got {type(loaded).__name__}")
        params = merge(params, loaded)
    return params


def main(argv: list[str] | None = None) -> None:
    """CLI: check params.yaml, with override files merged over it as `snakemake --configfile FILE…` merges them,
    against the schema, as the workflow does."""
    parser = argparse.ArgumentParser(prog="mifeatures params", description=usage.summary(__doc__),
                                     epilog=usage.summary(main.__doc__).replace("CLI: check", "Checks", 1))
    parser.add_argument("overrides", nargs="*",
                        help="override files, each merged over the ones before (e.g. config/tiny.yaml)")
    parser.add_argument("--base", default="params.yaml",
                        help="the settings the workflow reads first (its configfile); default: %(default)s")
    parser.add_argument("--schema", default="workflow/schemas/params.schema.yaml", help="default: %(default)s")
    args = parser.parse_args(argv)
    # Naming the base again (`mifeatures params params.yaml tiny.yaml`) merges it once.
    files = [args.base, *(path for path in args.overrides if Path(path).resolve() != Path(args.base).resolve())]
    try:
        validate_params(load_params(files), args.schema, source=" + ".join(map(str, files)))
    except ParamsError as error:
        print(error, file=sys.stderr)
        sys.exit(1)
    print(f"{' + '.join(files)}: valid")


if __name__ == "__main__":
    main()
