"""mifeatures: a rebuildable, auditable re-run of "Features that maximize mutual information".

The library behind the workflow: a core (the STL-10 format, images, models, objective, maps, MI and its
estimators, scoring, inference) that never parses argv or writes provenance, and over it one thin stage
module per rule (sample, download, grayscale, train, score, crosscheck, aggregate, findings, figures,
article), which imports only the core; plus params validation, provenance and the audit.
The names below are imported on first use, so ``python -m mifeatures.STAGE`` loads only its stage.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mifeatures")
except PackageNotFoundError:  # run from a checkout's src/ on PYTHONPATH, not installed (a bare GPU machine)
    __version__ = "not installed"

_PUBLIC = {
    "download_stl10": "download", "make_sample": "sample", "read_stl10_images": "stl10", "write_stl10_images": "stl10",
    "load_images": "images", "resize_images": "images", "to_grayscale": "images",
    "mutual_information": "mi",
    "ENCODERS": "models", "build_encoder": "models", "map_size": "models",
    "DeepInfoMaxLoss": "objective", "LossWeights": "objective",
    "ParamsError": "params", "load_params": "params", "validate_params": "params",
    "feature_maps": "maps", "load_encoder": "maps",
    "NonFiniteLossError": "training", "TrainConfig": "training",
}  # fmt: skip

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mifeatures' has no attribute {name!r}")
    return getattr(import_module(f"mifeatures.{_PUBLIC[name]}"), name)
