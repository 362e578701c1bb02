"""Tests of params.yaml validation: bad values stop with the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mifeatures.params import ParamsError, load_params, main, merge, validate_params

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/params.schema.yaml"
PARAMS = REPO / "params.yaml"


def test_shipped_configs_are_valid():
    """params.yaml alone and with each override file in config/ passes the schema."""
    validate_params(load_params([PARAMS]), SCHEMA)
    for override in sorted((REPO / "config").glob("*.yaml")):
        validate_params(load_params([PARAMS, override]), SCHEMA)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"cases": ["a", "e"]}, r"cases\.1: 'e' is not one of \['a', 'b', 'c', 'd'\]"),
        ({"train": {"lr": 0}}, r"train\.lr: 0 is less than or equal to the minimum of 0"),
        ({"train": {"lr": "fast"}}, r"train\.lr: 'fast' is not of type 'number'"),
        ({"train": {"batch_size": 0}}, r"train\.batch_size: 0 is less than the minimum of 2"),
        ({"train": {"epochs": 0}}, r"train\.epochs: 0 is less than the minimum of 1"),
        ({"train": {"overrides": {"c": {"lr": -1}}}}, r"train\.overrides\.c\.lr: -1 is less than or equal"),
        ({"train": {"overrides": {"e": {}}}}, r"train\.overrides: 'e' is not one of"),
        ({"score": {"bins": 1}}, r"score\.bins: 1 is less than the minimum of 2"),
        ({"data": {"dataset": "imagenet"}}, r"data\.dataset: 'imagenet' is not one of \['sample', 'stl10'\]"),
        ({"train": {"lr_typo": 1}}, r"train: Additional properties are not allowed \('lr_typo' was unexpected\)"),
        ({"train": {"seeds": [78, -1]}}, r"train\.seeds\.1: -1 is less than the minimum of 0"),
        ({"train": {"seeds": [78, 78]}}, r"train\.seeds: \[78, 78\] has non-unique elements \(distinct"),
        ({"train": {"seeds": []}}, r"train\.seeds: \[\] should be non-empty"),
        ({"train": {"overrides": {"c": {"seeds": [1]}}}}, r"train\.overrides\.c: Additional properties"),
        ({"score": {"null_shifts": 0}}, r"score\.null_shifts: 0 is less than the minimum of 1 \(circular shifts"),
        ({"score": {"ksg": {"maps": 33}}}, r"score\.ksg\.maps: 33 is greater than the maximum of 32"),
        ({"findings": {"confidence": 1}}, r"findings\.confidence: 1 is greater than or equal to the maximum of 1"),
        ({"findings": {"bootstrap": 10}}, r"findings\.bootstrap: 10 is less than the minimum of 100"),
        ({"data": {"sample": {"seed": -3}}}, r"data\.sample\.seed: -3 is less than the minimum of 0"),
        ({"score": {"noise_seed": -1}}, r"score\.noise_seed: -1 is less than the minimum of 0"),
        ({"train": {"checkpoint_every": 0}}, r"train\.checkpoint_every: 0 is less than the minimum of 1"),
        ({"figures": {"images": [10, 300]}},
         r"figures\.images: image 300 does not exist: data\.sample\.n_images has 200 images, indices 0 to 199"),
        ({"data": {"dataset": "stl10"}, "figures": {"images": [5000]}},
         r"figures\.images: image 5000 does not exist: the STL-10 train split has 5000 images"),
        ({"cases": ["a", "c"], "train": {"overrides": {"b": {"lr": 1e-3}}}},
         r"train\.overrides\.b: case 'b' is not in cases \['a', 'c'\]; add it to cases or remove its overrides"),
    ],
)
def test_bad_values_name_the_key(override, message):
    """Each bad value is reported as params.yaml: KEY: what is wrong."""
    with pytest.raises(ParamsError, match=r"params\.yaml: " + message):
        validate_params(merge(load_params([PARAMS]), override), SCHEMA)


def test_every_error_is_reported_at_once():
    """Two bad keys give two lines, so a user fixes them in one go."""
    with pytest.raises(ParamsError) as error:
        validate_params(merge(load_params([PARAMS]), {"train": {"lr": 0}, "score": {"bins": 1}}), SCHEMA)
    assert len(str(error.value).splitlines()) == 2


def test_cli_exit_code_and_message(tmp_path, capsys):
    """`mifeatures params` exits 1 and prints the key on stderr; 0 on a good file."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"score": {"bins": 1}}))
    with pytest.raises(SystemExit) as exit_:
        main([str(PARAMS), str(bad), "--schema", str(SCHEMA)])
    assert exit_.value.code == 1
    assert "score.bins" in capsys.readouterr().err
    main([str(PARAMS), "--schema", str(SCHEMA)])
    assert "valid" in capsys.readouterr().out


def test_unreadable_yaml_names_the_file(tmp_path):
    """A YAML syntax error is reported with the file name."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="broken.yaml: cannot read it as YAML"):
        load_params([broken])


@pytest.mark.parametrize("spelling", ["1e-05", "1E-5", "1.0e-05", "+1e-5", ".00001"])
def test_float_spellings_of_other_tools_are_numbers(tmp_path, spelling):
    """`dvc exp run -S train.lr=1e-5` writes `lr: 1e-05`, a string to YAML 1.1: it is read as the number."""
    override = tmp_path / "exp.yaml"
    override.write_text(f"train:\n  lr: {spelling}\n  overrides: {{c: {{lr: {spelling}}}}}\n")
    params = load_params([PARAMS, override])
    validate_params(params, SCHEMA)
    assert params["train"]["lr"] == 1e-5 and params["train"]["overrides"]["c"]["lr"] == 1e-5


def test_strings_that_look_like_numbers_stay_strings_where_the_schema_wants_strings():
    """Only keys the schema types as numbers are coerced: an all-digit md5 stays a string."""
    params = merge(load_params([PARAMS]), {"data": {"stl10": {"md5": "1" * 31 + "0"}}, "train": {"epochs": "3"}})
    validate_params(params, SCHEMA)
    assert params["data"]["stl10"]["md5"] == "1" * 31 + "0" and params["train"]["epochs"] == 3
