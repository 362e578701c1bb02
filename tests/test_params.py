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
