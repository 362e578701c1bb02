"""Tests of params.yaml validation: bad values stop with the key and what is allowed."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pooch
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mifeatures.core.statistics.aggregation import WIN_STATISTICS
from mifeatures.stages.crosscheck import draw_pairs
from mifeatures.core.statistics.inference import bootstrap_means, seed_test, seeds_needed
from mifeatures.core.information.ksg import ksg_mi
from mifeatures.core.information.mi import mutual_information
from mifeatures.workflow.memory import stage_mb
from mifeatures.workflow.params import ParamsError, case_train, load_params, main, merge, validate_params
from mifeatures.core.networks.runtime import set_up
from mifeatures.core.data.sample import make_sample
from mifeatures.core.networks.shapes import VALID, Critics, map_size
from mifeatures.core.information.shifts import draw_shifts
from mifeatures.core.networks.together import check_configs
from mifeatures.core.networks.training import TrainConfig, adam, seed_everything

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
        ({"data": {"dataset": "imagenet"}}, r"data\.dataset: 'imagenet' is not one of \['sample', 'stl10', 'folder'\]"),
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
        main([str(PARAMS), str(bad), "--base", str(PARAMS), "--schema", str(SCHEMA)])
    assert exit_.value.code == 1
    assert "score.bins" in capsys.readouterr().err
    main(["--base", str(PARAMS), "--schema", str(SCHEMA)])
    assert "valid" in capsys.readouterr().out


def test_cli_merges_an_override_file_over_params_yaml_as_snakemake_does(capsys, monkeypatch):
    """`mifeatures params config/tiny.yaml` printed 17 "is a required property" lines (the override file was
    checked alone); it is checked over params.yaml, as `snakemake --configfile config/tiny.yaml` reads it, and
    naming params.yaml too merges it once."""
    monkeypatch.chdir(REPO)
    main(["config/tiny.yaml"])
    assert capsys.readouterr().out == "params.yaml + config/tiny.yaml: valid\n"
    main(["params.yaml", "config/tiny.yaml"])
    assert capsys.readouterr().out == "params.yaml + config/tiny.yaml: valid\n"


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


TINY = REPO / "config/tiny.yaml"


def file_error(tmp_path, text: str) -> str:
    """What `mifeatures params params.yaml tiny.yaml OVERRIDE` says of an override file holding ``text``."""
    override = tmp_path / "override.yaml"
    override.write_text(text)
    with pytest.raises(ParamsError) as error:
        validate_params(load_params([PARAMS, TINY, override]), SCHEMA, source="override.yaml")
    return str(error.value)


@pytest.mark.parametrize("spelling", ["1.0", "'1e0'", "1e9", "2.0"])
def test_epochs_as_a_float_validator_says_valid_then_train_fails(tmp_path, spelling):
    """`train: {epochs: 1.0}` was "valid" to jsonschema (1.0 counts as an integer there) and the train job's
    argparse then refused it, after Snakemake had deleted the models: integers are integers here."""
    said = file_error(tmp_path, f"train: {{epochs: {spelling}}}\n")
    assert "train.epochs:" in said and "is not of type 'integer'" in said, said


def test_seed_as_a_float_is_refused_before_a_missing_input(tmp_path):
    """`seeds: [78.0]` gave "Nothing to be done", then `Missing input … seed78.0`."""
    assert "train.seeds.0: 78.0 is not of type 'integer'" in file_error(tmp_path, "train: {seeds: [78.0]}\n")


@pytest.mark.parametrize("override", ["train: {batch_size: 30}", "train: {overrides: {c: {batch_size: 30}}}"])
def test_batch_size_over_the_images_deletes_every_train_folder(tmp_path, override):
    """`batch_size: 30` on 20 images failed every train job (whose old outputs were already deleted)."""
    said = file_error(tmp_path, override + "\n")
    assert "batch_size: 30 exceeds the 20 images of data.sample.n_images" in said, said


@pytest.mark.parametrize(("override", "key"), [("score: {bins: 100000}", "score.bins: 100000 is greater than the "
                                                "maximum of 256"),
                                               ("data: {sample: {n_images: 10000000}}", "data.sample.n_images"),
                                               ("findings: {bootstrap: 100000000}", "findings.bootstrap")])
def test_bins_100000_passes_validation_and_asks_for_terabytes(tmp_path, override, key):
    """`bins: 100000` passed and the score job asked for 18.6 TiB: sizes that allocate memory are bounded."""
    assert key in file_error(tmp_path, override + "\n")


def test_duplicate_epochs_key_valid_to_us_refused_by_dvc(tmp_path):
    """A duplicate `epochs:` key: Snakemake took the last, DVC refused the file; now both are refused."""
    said = file_error(tmp_path, "train:\n  epochs: 1\n  lr: 1.0e-4\n  epochs: 3\n")
    assert "override.yaml, line 4: key 'epochs' given twice in one mapping" in said, said


@pytest.mark.parametrize(("spelling", "problem"), [("010", "leading zero"), ("0o12", "octal prefix"),
                                                   ("1:18", "sexagesimal"), ("yes", "YAML 1.1 boolean")])
def test_seed_010_is_8_to_snakemake_and_10_to_dvc(tmp_path, spelling, problem):
    """`seed: 010`: Snakemake (YAML 1.1) used 8, DVC's lock and `dvc params diff` said 10. Every spelling the
    two YAML versions read differently is refused, naming the file, line, key and both readings."""
    said = file_error(tmp_path, f"data:\n  sample:\n    seed: {spelling}\n")
    assert f"override.yaml, line 3: seed: '{spelling}' has a" in said and problem in said, said


def test_spellings_both_yaml_versions_agree_on_are_read(tmp_path):
    """Quoted strings, 0, plain decimals and true/false are read as before."""
    override = tmp_path / "override.yaml"
    override.write_text("data: {sample: {seed: 0, n_images: 12}, stl10: {md5: '0123456789abcdef0123456789abcdef'}}\n")
    params = load_params([PARAMS, override])
    validate_params(params, SCHEMA)
    assert params["data"]["sample"] == {"seed": 0, "n_images": 12}


@pytest.mark.parametrize(("primary", "message"), [
    ("{protocol: faithful, estimator: null-corrected}", "findings.primary.estimator: 'plug-in' was expected"),
    ("{protocol: corrected, estimator: median}", "findings.primary.estimator: 'median' is not one of"),
])
def test_primary_verdict_that_no_stage_computes_is_refused(tmp_path, primary, message):
    """The primary (protocol, estimator) is declared before any job and must be one the findings compute."""
    assert message in file_error(tmp_path, f"findings: {{primary: {primary}}}\n")


def test_schema_enums_are_the_codes_own():
    """The schema's lists of cases, precisions, win statistics and protocols are the ones the stages use,
    so neither can accept what the other refuses."""
    from mifeatures.core.statistics.aggregation import WIN_STATISTICS
    from mifeatures.core.networks.models import ENCODERS
    from mifeatures.core.protocols import PROTOCOLS
    from mifeatures.core.networks.training import PRECISIONS
    schema = yaml.safe_load(SCHEMA.read_text())
    train = schema["$defs"]["train_keys"]
    assert schema["$defs"]["case"]["enum"] == list(ENCODERS)
    assert train["precision"]["enum"] == list(PRECISIONS)
    assert schema["properties"]["aggregate"]["properties"]["win_by"]["enum"] == list(WIN_STATISTICS)
    from mifeatures.stages.figures import MAPS_ORDERS
    assert schema["properties"]["figures"]["properties"]["maps_order"]["enum"] == list(MAPS_ORDERS)
    primary = schema["properties"]["findings"]["properties"]["primary"]
    assert primary["properties"]["protocol"]["enum"] == list(PROTOCOLS)


def test_a_cases_train_section_is_its_overrides_over_the_shared_values():
    """One resolution of train.overrides, used by the workflow's train jobs and by the audit alike."""
    from mifeatures.workflow.params import case_train
    params = {"train": {"lr": 1e-4, "epochs": 2, "overrides": {"c": {"lr": 2e-4}}}}
    assert case_train(params, "c") == {"lr": 2e-4, "epochs": 2}
    assert case_train(params, "a") == {"lr": 1e-4, "epochs": 2}


@pytest.mark.parametrize(("override", "key"), [
    ({"train": {"overrides": {"c": {"lr": float("nan")}}}}, "train.overrides.c.lr: nan is not a finite number"),
    ({"train": {"alpha": float("inf")}}, "train.alpha: inf is not a finite number"),
    ({"findings": {"margin": float("inf")}}, "findings.margin: inf is not a finite number"),
    ({"findings": {"confidence": float("nan")}}, "findings.confidence: nan is not a finite number"),
    ({"score": {"ksg": {"pixels": 10, "neighbors": 10}}}, "score.ksg.neighbors: 10 is not below score.ksg.pixels"),
    ({"score": {"ksg": {"pixels": 9216, "neighbors": 8000}}}, "score.ksg.pixels: 9216 is greater than the maximum"),
    ({"train": {"seeds": [4294967296]}}, "train.seeds.0: 4294967296 is greater than the maximum of 4294967295"),
    ({"data": {"stl10": {"url": "file:///data/stl10_binary.tar.gz"}}}, "data.stl10.url: 'file:///data/"),
])
def test_values_that_validated_then_failed_their_job_or_deleted_a_model(override, key):
    """Each was "valid", then failed its job after Snakemake had deleted the old outputs (a NaN learning rate
    cost case c's model), or ran with a meaningless value (an infinite margin puts every difference within it)."""
    with pytest.raises(ParamsError, match=re.escape(key)):
        validate_params(merge(load_params([PARAMS]), override), SCHEMA)


@pytest.mark.parametrize("override", [
    {"train": {"together": True, "precision": "bf16"}},
    {"train": {"together": True, "overrides": {"c": {"precision": "bf16"}}}},
])
def test_seeds_together_in_bf16_are_refused_before_any_job(override):
    """The together module trains fp32 or tf32 only: a bf16 case under train.together is named by the validator,
    not by a job that has deleted its previous outputs."""
    params = merge(load_params([PARAMS]), override)
    with pytest.raises(ParamsError, match=r"train.together: true, but train(.overrides.c)?.precision is bf16"):
        validate_params(params, SCHEMA)
    validate_params(merge(params, {"train": {"together": False}}), SCHEMA)


@pytest.mark.parametrize(("override", "message"), [
    ({"train": {"cuda_graph": True, "precision": "bf16"}}, "train.cuda_graph: true for case c, with precision bf16"),
    ({"train": {"together": True, "overrides": {"c": {"cuda_graph": True}}}},
     "train.cuda_graph: true for case c, with train.together: true"),
])
def test_a_cuda_graph_it_cannot_replay_is_refused_before_any_job(override, message):
    """The graphed step replays one seed's fp32 or tf32 step: bf16 and seeds together are named by the validator."""
    with pytest.raises(ParamsError, match=re.escape(message)):
        validate_params(merge(load_params([PARAMS]), override), SCHEMA)


SCHEMA_TREE = yaml.safe_load(SCHEMA.read_text())


def resolved(node: dict) -> dict:
    return SCHEMA_TREE["$defs"][node["$ref"].rpartition("/")[2]] if "$ref" in node else node


def schema_leaves(schema: dict, node: dict | None = None, path: tuple = ()) -> list[tuple[tuple, dict]]:
    """Every settable key of the schema with its own schema; train.overrides as case c's."""
    node = resolved(node if node is not None else schema)
    if path == ("train", "overrides"):
        return [(path + ("c", key), sub) for key, sub in node["additionalProperties"]["properties"].items()]
    if node.get("type") == "object" and "properties" in node:
        return [leaf for key, sub in node["properties"].items() for leaf in schema_leaves(schema, sub, path + (key,))]
    return [(path, node)]


LEAVES = schema_leaves(SCHEMA_TREE)
HOSTILE = [float("nan"), float("inf"), float("-inf"), 10**30, 1e300, -1, -1e-9, 0, 0.5, True, None, "x", "", [], {}]


@st.composite
def key_and_value(draw):
    """A schema key and a value for it: hostile (NaN, ±inf, huge, negative, wrong type), at or just past one of
    its bounds, one of its choices, or anything Hypothesis draws."""
    path, schema = draw(st.sampled_from(LEAVES))
    item = resolved(schema.get("items", {}))
    bounds = [bound + step for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
              for source in (schema, item) if key in source for bound in [source[key]]
              for step in (0, -1, 1, -1e-9, 1e-9)]
    choices = schema.get("enum", []) + item.get("enum", [])
    value = draw(st.one_of(st.sampled_from(HOSTILE + bounds + choices), st.integers(), st.floats(),
                           st.text(max_size=8)))
    if schema.get("type") == "array" and draw(st.booleans()):
        value = [value]
    return path, value


def feed(path: tuple, params: dict) -> None:
    """Run the code the key feeds on a tiny input, with the validated params."""
    section, key = path[0], path[-1]
    train = case_train(params, "c")
    if section == "cases":
        for case in params["cases"]:
            map_size(case)
    elif section == "data" and key == "url":
        assert urlsplit(params["data"]["stl10"]["url"]).hostname
        pooch.downloaders.choose_downloader(params["data"]["stl10"]["url"])
    elif section == "data" and key in ("n_images", "seed"):
        sample = params["data"]["sample"]
        assert len(make_sample(sample["n_images"], sample["seed"])) == sample["n_images"]
    elif section == "train":
        if train["device"] == "cuda" and not torch.cuda.is_available():
            return  # refused by the workflow before any job (test_audit: check_devices)
        for seed in params["train"]["seeds"]:
            seed_everything(seed)
        config = TrainConfig(**{name: train[name] for name in ("epochs", "batch_size", "lr", "alpha", "beta",
                                                               "gamma", "device", "precision")},
                             seed=params["train"]["seeds"][0], adversarial_prior=False)
        set_up(config.device, 1, config.precision)
        critics = Critics(train["critic_channels"], train["global_units"])
        assert 0 < stage_mb("train", "b", 20, critics=critics) < 10**9
        if train["together"]:
            check_configs([replace(config, seed=seed) for seed in params["train"]["seeds"]])
        weight = torch.ones(1, requires_grad=True)
        loss = sum(w * torch.nn.functional.softplus(weight * 10) for w in (config.alpha, config.beta, config.gamma))
        loss.backward()
        adam([weight], config.lr, torch.device("cpu"), train["fused_adam"]).step()
        assert torch.isfinite(loss) and torch.isfinite(weight).all()
    elif section == "score":
        score, ksg = params["score"], params["score"]["ksg"]
        rng = np.random.default_rng(0)
        image, maps = rng.random((VALID, VALID)), rng.random((1, VALID, VALID))
        assert np.isfinite(mutual_information(image, maps, score["bins"])).all()
        np.random.default_rng(score["noise_seed"])
        draw_shifts((VALID, VALID), score["null_shifts"], score["null_seed"])
        draw_pairs(params["data"]["sample"]["n_images"], ksg["images"], ksg["maps"], ksg["seed"])
        estimate = ksg_mi(image, maps, ksg["neighbors"], ksg["pixels"], ksg["seed"], ksg["null_shifts"])
        assert np.isfinite(estimate[1]).all()
    elif section == "findings":
        findings = params["findings"]
        seeds = np.random.default_rng(0).normal(0.05, 0.01, (3, 8))
        bootstrap_means({"c": seeds}, findings["bootstrap"], findings["seed"])
        test = seed_test(seeds, findings["confidence"], findings["margin"])
        assert np.isfinite([test.low, test.high, test.p_within]).all()
        seeds_needed(0.01, findings["margin"], 3, findings["confidence"])
    elif section == "aggregate":
        assert params["aggregate"]["win_by"] in WIN_STATISTICS


@settings(max_examples=250, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(key_and_value())
def test_every_value_is_refused_naming_its_key_or_runs_the_code_it_feeds(drawn):
    """No value the validator calls valid fails the code it feeds; every value it refuses is named by its key."""
    path, value = drawn
    params = load_params([PARAMS])
    target = params
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value
    try:
        validate_params(params, SCHEMA)
    except ParamsError as error:
        assert ".".join(path) in str(error) or ".".join(path[:-1]) in str(error), (path, value, str(error))
        return
    feed(path, params)
