"""mifeatures: a rebuildable, auditable re-run of "Features that maximize mutual information".

The library behind the workflow: one module per stage (data, grayscale, train, score, aggregate,
figures) plus the models, the objective, the MI estimator, params validation and provenance.
The names below are imported on first use, so ``python -m mifeatures.STAGE`` loads only its stage.
"""

from importlib import import_module
from importlib.metadata import version

__version__ = version("mifeatures")

_PUBLIC = {
    "download_stl10": "data", "make_sample": "data", "read_stl10_images": "data", "write_stl10_images": "data",
    "resize_images": "grayscale", "to_grayscale": "grayscale",
    "mutual_information": "mi",
    "ENCODERS": "models", "build_encoder": "models", "map_size": "models",
    "DeepInfoMaxLoss": "objective", "LossWeights": "objective",
    "ParamsError": "params", "load_params": "params", "validate_params": "params",
    "feature_maps": "score", "load_encoder": "score",
    "NonFiniteLossError": "train", "TrainConfig": "train",
}  # fmt: skip

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mifeatures' has no attribute {name!r}")
    return getattr(import_module(f"mifeatures.{_PUBLIC[name]}"), name)
