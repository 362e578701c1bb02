# All Python of the workflow: config validation, paths, targets and input/params functions.
from pathlib import Path

from mifeatures.models import INPUT_SIZE, map_size
from mifeatures.params import validate_params

# Fails before any job runs, naming the key (e.g. "params.yaml: train.lr: 0 is less than …")
# and every file the config was merged from.
validate_params(
    config,
    Path(workflow.basedir) / "schemas/params.schema.yaml",
    source=" + ".join(["params.yaml", *map(str, workflow.overwrite_configfiles or [])]),
)

CASES = config["cases"]
CONDA_ENV = "../../environment.yml"

RAW_IMAGES = f"data/{config['data']['dataset']}/stl10_binary/train_X.bin"
GRAY = "results/grayscale/size{size}.npy"
GRAY_SIZES = sorted({INPUT_SIZE} | {map_size(case) for case in CASES})
ENCODER = "results/train/{case}/encoder.pt"
LOSS = "results/train/{case}/loss.csv"
RESUME = (
    "results/train/{case}/resume.pt"  # exists only while a training job is unfinished
)
MI_TABLE = "results/score/{case}/mi.csv"
SUMMARY = "results/score/{case}/summary.csv"
FIGURES = "results/figures"


def code(*modules):
    """Library modules a job imports, listed as inputs since the code trigger sees only rule code."""
    return [f"src/mifeatures/{module}.py" for module in modules]


def dataset_params():
    """KEY=VALUE of the params.yaml keys that identify the active dataset, for provenance."""
    dataset = config["data"]["dataset"]
    return [f"data.dataset={dataset}"] + [
        f"data.{dataset}.{key}={value}"
        for key, value in config["data"][dataset].items()
    ]


def encoder_images():
    return GRAY.format(size=INPUT_SIZE)


def sized_images(wildcards):
    """The grayscale images at the case's map size (what the critics and MI see)."""
    return GRAY.format(size=map_size(wildcards.case))


def train_params(wildcards):
    """train: section with the case's overrides applied; only these values reach the job."""
    params = {
        key: value for key, value in config["train"].items() if key != "overrides"
    }
    params.update(config["train"]["overrides"].get(wildcards.case, {}))
    return params


def per_case(pattern):
    return [pattern.format(case=case) for case in CASES]


def case_pairs(pattern):
    """CASE=PATH arguments for the CLIs that combine cases."""
    return [f"{case}={path}" for case, path in zip(CASES, per_case(pattern))]


def map_figures():
    return [
        f"{FIGURES}/maps_{case}_image{image}.png"
        for image in config["figures"]["images"]
        for case in CASES
    ]


def all_figures():
    return [
        f"{FIGURES}/loss.png",
        *map_figures(),
        f"{FIGURES}/chosen_mean_mi.png",
        f"{FIGURES}/mi_distribution.png",
        f"{FIGURES}/wins.png",
    ]
